"""bfdl-tff: a reproduction of B-FDL (Jagtap, Chavan, Patil), "Blockchain-integrated federated
learning for privacy-preserving medical imaging diagnosis", on TensorFlow Federated,
tensorflow-privacy and a PBFT ledger (package ``ledger``)."""

__version__ = "0.1.0"
