"""The score network and its self-describing TorchScript packaging."""
