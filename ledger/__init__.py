"""A permissioned ledger with PBFT ordering (Castro & Liskov 1999), RFC 6962 Merkle trees,
durable sqlite storage and deterministic contracts: the blockchain layer of B-FDL
(paper sections 2.1, 3.4). Independent of TensorFlow."""
