"""Failover kinds: the live failover (``live``), its rollback (``rollback``), their records in
the database (``store``) and the plan of the VM that boots in CloudStack (``target_vm``)."""
