"""The meta-learning family: DD (back-propagation through time) and label distillation."""
