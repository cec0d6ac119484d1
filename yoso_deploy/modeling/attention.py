"""The YOSO self-attention of the reference model (replaces transformers' ``YosoSelfAttention``).

The graph around the two custom ops is fixed by ``plugins/OPS.md`` section "Attention graph";
this module is its executable form, and the exporter traces exactly this code.
"""

from __future__ import annotations

import torch
from torch import nn

from ..constants import ATTENTION_MODES  # noqa: E402,F401 - re-exported
from ..errors import UsageError
from . import native_ops, ops


class YosoReferenceSelfAttention(nn.Module):
    """Drop-in replacement for ``transformers``' YosoSelfAttention with correct masking.

    Parameter names (``query``, ``key``, ``value``, ``conv``) match transformers so state dicts
    are interchangeable. The random +-1 diagonals are the non-persistent buffer ``signs``
    ``[H, 3, P, D]``: drawn once from the seed when the module is built, reused by every forward in
    eval mode, redrawn per forward in training mode (as the paper trains).
    """

    def __init__(
        self,
        config,
        *,
        attention: str = "lsh",
        kernels: str = "torch",
        signs: torch.Tensor | None = None,
        query: nn.Linear | None = None,
        key: nn.Linear | None = None,
        value: nn.Linear | None = None,
        conv: nn.Conv2d | None = None,
    ):
        super().__init__()
        if attention not in ATTENTION_MODES:
            raise UsageError(
                f"unknown attention mode {attention!r}; choose one of {', '.join(ATTENTION_MODES)}"
            )
        if config.hidden_size % config.num_attention_heads != 0:
            raise UsageError(
                f"hidden_size ({config.hidden_size}) is not a multiple of num_attention_heads "
                f"({config.num_attention_heads})"
            )
        self.attention = attention
        self.kernels = native_ops.check_kernels(kernels)  # LSH ops: "torch" (reference) or "native"
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.all_head_size = self.num_heads * self.head_dim
        self.num_hash = int(config.num_hash)
        self.hash_code_len = int(config.hash_code_len)
        self.hash_dim = ops.hash_dim_for(self.head_dim, self.hash_code_len)
        ops.check_hash_params(self.num_hash, self.hash_code_len, self.hash_dim)

        self.query = query if query is not None else nn.Linear(config.hidden_size, self.all_head_size)
        self.key = key if key is not None else nn.Linear(config.hidden_size, self.all_head_size)
        self.value = value if value is not None else nn.Linear(config.hidden_size, self.all_head_size)
        self.conv_window = config.conv_window
        if config.conv_window is not None:
            self.conv = conv if conv is not None else nn.Conv2d(
                self.num_heads,
                self.num_heads,
                kernel_size=(config.conv_window, 1),
                padding=(config.conv_window // 2, 0),
                bias=False,
                groups=self.num_heads,
            )
        else:
            self.conv = None
        if signs is None:
            signs = ops.draw_signs(self.num_heads, self.num_hash, self.hash_code_len, self.hash_dim)
        expected = (self.num_heads, 3, ops.num_parts(self.num_hash, self.hash_dim, self.hash_code_len), self.hash_dim)
        if tuple(signs.shape) != expected:
            raise UsageError(f"signs must have shape {expected}, got {tuple(signs.shape)}")
        self.register_buffer("signs", signs.to(torch.float32), persistent=False)
        # When a list, forward appends (query_codes, key_codes) of LSH mode (the --debug-codes outputs).
        self.code_sink: list | None = None
        # Validation hook of LSH mode (yoso_deploy.validation.parity): when set, it is called as
        # ``code_hook(self, hidden_states, q_hash_input, k_hash_input, mask, signs)`` instead of the two
        # FastHash calls and returns the (query_codes, key_codes) that LSHCumulation then uses; if it has
        # an ``observe(self, value, context)`` method, that is then called with LSHCumulation's value
        # input and output.
        self.code_hook = None
        self.layer_index: int | None = None  # set by convert_model: this layer's place in the encoder

    def extra_repr(self) -> str:
        return (
            f"attention={self.attention}, heads={self.num_heads}, head_dim={self.head_dim}, "
            f"hash_dim={self.hash_dim}, num_hash={self.num_hash}, hash_code_len={self.hash_code_len}"
        )

    def _split_heads(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        return x.view(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False, **kwargs):
        batch, seq_len, _ = hidden_states.shape
        q = self._split_heads(self.query(hidden_states), batch)
        k = self._split_heads(self.key(hidden_states), batch)
        v = self._split_heads(self.value(hidden_states), batch)
        if attention_mask is None:
            mask = torch.ones(batch, seq_len, dtype=torch.int32, device=hidden_states.device)
        else:
            mask = (attention_mask != 0).to(torch.int32)

        if self.attention == "lsh":
            signs = self.signs
            if self.training:
                signs = ops.draw_signs(
                    self.num_heads, self.num_hash, self.hash_code_len, self.hash_dim, device=q.device
                )
            pad = self.hash_dim - self.head_dim
            qh = nn.functional.pad(q, (0, pad)) if pad else q
            kh = nn.functional.pad(k, (0, pad)) if pad else k
            fast_hash, lsh_cumulation = native_ops.ops_for(self.kernels)
            if self.code_hook is not None:
                q_codes, k_codes = self.code_hook(self, hidden_states, qh, kh, mask, signs)
            else:
                q_codes = fast_hash(qh, mask, signs, self.num_hash, self.hash_code_len)
                k_codes = fast_hash(kh, mask, signs, self.num_hash, self.hash_code_len)
            if self.code_sink is not None:
                self.code_sink.append((q_codes, k_codes))
            context = lsh_cumulation(
                q_codes, k_codes, mask, mask, v, self.hash_code_len
            )
            if self.code_hook is not None and hasattr(self.code_hook, "observe"):
                self.code_hook.observe(self, v, context)  # LSHCumulation's value input and output
        else:
            weights = ops.expectation_weights(q, k, mask, mask, self.hash_code_len)
            context = torch.matmul(weights, v)

        # In float32: normalize's eps (1e-12) is 0 in float16, and a masked query's zero row would become
        # 0/0 = NaN, which the next layer spreads to every token (plugins/OPS.md section 3, step 6).
        context = nn.functional.normalize(context.float(), p=2, dim=-1).to(context.dtype)
        if self.conv is not None:
            context = context + self.conv(v * mask[:, None, :, None].to(v.dtype))
        context = context.transpose(1, 2).reshape(batch, seq_len, self.all_head_size)
        return (context, None) if output_attentions else (context,)
