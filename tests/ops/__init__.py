"""Tests for the eager Tensor ops: forward values, gradients, errors and the PyTorch oracle."""
