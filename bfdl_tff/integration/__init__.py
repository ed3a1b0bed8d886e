"""B-FDL integration: the round hook that records every federated round on the PBFT ledger
(:mod:`bfdl_tff.integration.hook`), salted commitments and off-chain checkpoints
(:mod:`~bfdl_tff.integration.commitments`), and the independent auditor
(:mod:`~bfdl_tff.integration.audit`). Paper sections 3.1, 3.4, 3.5; objectives 5-6 of 1.2."""
