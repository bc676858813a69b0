"""Shared model parts: encoders (timm blocks, CNNs), the decoder, heads and the pretrainer."""
