// Command vcsim-launcher serves govmomi's vCenter simulator (VPX model) for the OSSEA-Migrate lab.
//
// It listens on 127.0.0.1:PORT (flag -port; 0 picks a free port), prints one line
// "VCSIM_URL=https://127.0.0.1:PORT/sdk" (no credentials) on stdout once it accepts
// connections, and exits cleanly on SIGTERM or SIGINT. The login it accepts is taken from
// the environment variables VCSIM_USERNAME and VCSIM_PASSWORD, never from argv; when both
// are unset it accepts any non-empty username and password (vcsim's default).
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 0, "port to listen on (0 = any free port)")
	useTLS := flag.Bool("tls", true, "serve https with a self-signed certificate")
	hosts := flag.Int("standalone-host", 1, "number of standalone hosts")
	clusters := flag.Int("cluster", 1, "number of clusters")
	clusterHosts := flag.Int("host-per-cluster", 3, "hosts per cluster")
	vms := flag.Int("vm", 2, "virtual machines per resource pool / standalone host")
	datastores := flag.Int("ds", 1, "number of local datastores")
	apps := flag.Int("app", 0, "vApps per cluster (each with -vm VMs)")
	certOut := flag.String("cert-out", "", "write the server's self-signed certificate (PEM) here")
	flag.Parse()

	model := simulator.VPX()
	model.Host = *hosts
	model.Cluster = *clusters
	model.ClusterHost = *clusterHosts
	model.Machine = *vms
	model.Datastore = *datastores
	model.App = *apps
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: creating the model: %v", err)
	}
	defer model.Remove()

	listen := &url.URL{Host: net.JoinHostPort(*host, strconv.Itoa(*port))}
	user, pass := os.Getenv("VCSIM_USERNAME"), os.Getenv("VCSIM_PASSWORD")
	if user != "" || pass != "" {
		if user == "" || pass == "" {
			log.Fatal("vcsim: set both VCSIM_USERNAME and VCSIM_PASSWORD, or neither")
		}
		listen.User = url.UserPassword(user, pass)
	}
	model.Service.Listen = listen
	if *useTLS {
		// govmomi's built-in test certificate has a 1024-bit key that OpenSSL refuses at its
		// default security level, so clients could not verify it; make a P-256 one instead.
		cert, err := selfSignedCert(*host, *certOut)
		if err != nil {
			log.Fatalf("vcsim: certificate: %v", err)
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}

	server := model.Service.NewServer()
	defer server.Close()

	shown := *server.URL
	shown.User = nil
	fmt.Printf("VCSIM_URL=%s\n", shown.String())
	os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	got := <-sig
	log.Printf("vcsim: %v received, stopping", got)
}

// selfSignedCert makes a P-256 certificate for host, 127.0.0.1, ::1 and localhost, valid for a
// year, and writes its PEM to certOut when given (clients can trust it as their CA file).
func selfSignedCert(host, certOut string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "vcsim.lab", Organization: []string{"OSSEA-Migrate lab"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost", "vcsim.lab"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	} else if ip == nil && host != "" {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if certOut != "" {
		if err := os.WriteFile(certOut, certPEM, 0o644); err != nil {
			return tls.Certificate{}, err
		}
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	return tls.X509KeyPair(certPEM, keyPEM)
}
