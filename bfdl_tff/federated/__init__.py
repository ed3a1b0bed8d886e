"""Federated core of B-FDL (paper 2.1 FedAvg, 3.1 DP-SGD + secure aggregation, 3.5 privacy):
TFF processes, privacy accounting, evaluation, communication accounting, the experiment runner
and the per-round hook interface. See docs/federated.md. Heavy modules (TensorFlow/TFF) are
imported only by the submodules that need them."""
