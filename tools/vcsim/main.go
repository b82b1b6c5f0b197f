// Command vcsim-launcher serves govmomi's vCenter simulator (VPX model) for the OSSEA-Migrate lab.
//
// It listens on 127.0.0.1:PORT (flag -port; 0 picks a free port), prints one line
// "VCSIM_URL=https://127.0.0.1:PORT/sdk" (no credentials) on stdout once it accepts
// connections, and exits cleanly on SIGTERM or SIGINT. The login it accepts is taken from
// the environment variables VCSIM_USERNAME and VCSIM_PASSWORD, never from argv; when both
// are unset it accepts any non-empty username and password (vcsim's default).
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"

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
	flag.Parse()

	model := simulator.VPX()
	model.Host = *hosts
	model.Cluster = *clusters
	model.ClusterHost = *clusterHosts
	model.Machine = *vms
	model.Datastore = *datastores
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
		model.Service.TLS = new(tls.Config)
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
