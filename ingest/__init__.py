"""Compute: loading models and SAEs, and the batched ablation sweep.

The only part of featuregraph that imports torch, sae_lens and transformer_lens.
"""
