"""A naive PyTorch SVE BERT, written from the paper's formula: the reference the benchmarks time.

Every targeted ``nn.Linear`` holds frozen ``U``, ``Vᵀ`` and per-member ``s_m``, biases and head;
each forward rebuilds ``W_m = U diag(max(s_m, 0)) Vᵀ`` for every member, the batch is repeated
per member (one ``bmm`` per layer), attention is ``F.scaled_dot_product_attention``. It runs
the same BERT as :mod:`sve_jax.models.bert` (post-LN, exact GELU, CLS or mean pooling) on the
same params and trainables, so its logits can be checked against ``sve_apply``'s.
"""
from __future__ import annotations

import time

import numpy as np

from sve_jax import layout
from sve_jax import tree

LEARNING_RATE, WEIGHT_DECAY, CLIP_NORM = 1e-3, 0.05, 1.0


def _to_torch(x, device):
  import torch  # pylint: disable=g-import-not-at-top
  return torch.from_numpy(np.array(x, np.float32)).to(device)


class TorchSVE:
  """A naive SVE BERT in PyTorch, from the paper's formula.

  Attributes:
    frozen: ``{path: tensor}`` shared leaves (embeddings, norms) and ``{path: (U, Vᵀ)}``.
    trainables: ``{path: (M, ...) tensor}`` with ``requires_grad``: singular values, biases
      and head, one slice per member.
  """

  def __init__(self, backbone, device: str, trainables=None, members: int = 4,
               decompose: bool = True):
    import torch  # pylint: disable=g-import-not-at-top
    self.config = backbone.module.config
    self.pooling = backbone.module.pooling
    self.members = members
    flat = {'/'.join(p): v for p, v in tree.flatten_paths(backbone.params).items()}
    self.frozen = {k: _to_torch(v, device) for k, v in flat.items()}
    self.factors = {}
    t0 = time.perf_counter()
    if decompose:
      for path, w in self.frozen.items():
        if layout.resolve_role(path, w, backbone.rules) == layout.DECOMPOSE:
          u, _, vh = torch.linalg.svd(w, full_matrices=False)
          self.factors[path[:-len('/kernel')]] = (u.contiguous(), vh.contiguous())
    if device != 'cpu':
      torch.cuda.synchronize()
    self.decompose_s = time.perf_counter() - t0
    self.trainables = {}
    if trainables is not None:
      for path, v in tree.flatten_paths(trainables).items():
        self.trainables['/'.join(path)] = _to_torch(v, device).requires_grad_(True)

  def _linear(self, x, name):
    """``x: (M, N, d_in)`` through member ``m``'s ``W_m = U diag(max(s_m, 0)) Vᵀ``."""
    import torch  # pylint: disable=g-import-not-at-top
    u, vh = self.factors[name]
    s = torch.relu(self.trainables[name + '/kernel'])                 # (M, r)
    w = torch.matmul(u * s[:, None, :], vh)                           # (M, d_in, d_out)
    return torch.baddbmm(self.trainables[name + '/bias'][:, None, :], x, w)

  def _norm(self, x, name):
    import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
    return F.layer_norm(x, x.shape[-1:], self.frozen[name + '/scale'],
                        self.frozen[name + '/bias'], eps=self.config.layer_norm_eps)

  def logits(self, input_ids, attention_mask):
    """``(M, B, C)`` member logits; the batch is repeated per member."""
    import torch  # pylint: disable=g-import-not-at-top
    import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
    c, f, m = self.config, self.frozen, self.members
    b, t = input_ids.shape
    x = (f['embeddings/word_embeddings/embedding'][input_ids]
         + f['embeddings/token_type_embeddings/embedding'][0]
         + f['embeddings/position_embeddings/embedding'][:t])
    x = self._norm(x, 'embeddings/layer_norm')
    x = x[None].expand(m, b, t, c.hidden_size).reshape(m, b * t, c.hidden_size)
    mask = attention_mask.bool()[None, :, None, None, :].expand(m, b, 1, 1, t)
    mask = mask.reshape(m * b, 1, 1, t)
    heads = lambda y: y.reshape(m * b, t, c.num_attention_heads, c.head_dim).transpose(1, 2)
    for i in range(c.num_hidden_layers):
      p = f'encoder/layer_{i}/'
      q, k, v = (heads(self._linear(x, p + f'attention/{n}')) for n in ('query', 'key', 'value'))
      ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
      ctx = ctx.transpose(1, 2).reshape(m, b * t, c.hidden_size)
      x = self._norm(x + self._linear(ctx, p + 'attention/output'), p + 'attention_layer_norm')
      y = self._linear(F.gelu(self._linear(x, p + 'intermediate')), p + 'output')
      x = self._norm(x + y, p + 'output_layer_norm')
    x = x.reshape(m, b, t, c.hidden_size)
    if self.pooling == 'mean':
      w = attention_mask.to(x.dtype)[None, :, :, None]
      pooled = (x * w).sum(2) / w.sum(2).clamp_min(1e-9)
    else:
      pooled = x[:, :, 0]
    return torch.baddbmm(self.trainables['head/bias'][:, None, :], pooled,
                         self.trainables['head/kernel'])

  def make_step(self):
    """AdamW (lr 1e-3, weight decay 0.05) with clipping at norm 1.0 on the trainables."""
    import torch  # pylint: disable=g-import-not-at-top
    params = list(self.trainables.values())
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)

    def step(input_ids, attention_mask, labels):
      optimizer.zero_grad(set_to_none=True)
      logits = self.logits(input_ids, attention_mask)
      loss = torch.nn.functional.cross_entropy(
          logits.reshape(-1, logits.shape[-1]), labels.repeat(self.members))
      loss.backward()
      torch.nn.utils.clip_grad_norm_(params, CLIP_NORM)
      optimizer.step()
      return loss

    return step


def torch_inputs(inputs, torch_model):
  import torch  # pylint: disable=g-import-not-at-top
  device = next(iter(torch_model.frozen.values())).device
  return (torch.from_numpy(np.asarray(inputs['input_ids'], np.int64)).to(device),
          torch.from_numpy(np.asarray(inputs['attention_mask'], np.int64)).to(device))
