"""FLOP counting that also sees attention on a CPU.

torch's FlopCounterMode counts the CUDA attention kernels but not the CPU one that
`F.scaled_dot_product_attention` dispatches to (`_scaled_dot_product_flash_attention_for_cpu`),
so on a CPU every ViT's attention went uncounted. `flop_counter()` adds that kernel and its
backward with torch's own attention formulas.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

_aten = torch.ops.aten


def _cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward(grad_out_shape, query_shape, key_shape, value_shape, *args,
                            out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


CPU_FORMULAS = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


def flop_counter() -> FlopCounterMode:
    """A silent FlopCounterMode that counts attention on every device (a multiply-add is 2)."""
    return FlopCounterMode(display=False, custom_mapping=CPU_FORMULAS)
