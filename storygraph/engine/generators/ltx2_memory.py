"""Context memory for LTX-2: remembered frames as clean tokens placed *before* the clip in time.

``LTX2MemoryPipeline`` is diffusers' ``LTX2ConditionPipeline`` with one override, ``prepare_latents``: the stock
method places the ordinary conditions (an extension at latent 0, keyframes appended at their frame), then every
:class:`LTX2MemoryCondition` is encoded with the stock preprocessing and VAE and appended as extra tokens whose
coordinates come from the stock ``_prepare_keyframe_coords`` at pixel time ``-8 * before``: memory k latent
frames before the clip covers ``[-8k, -8k + 1)``. Everything after that is the parent's code: the per-token
timestep ``t * (1 - mask)`` (strength 1: timestep 0, clean on every step), the blend of the prediction with the
clean tokens, CFG/STG duplication, RoPE (which takes negative time as it is) and, before decoding, dropping
every appended token, so memory informs the clip without ever being shown in it.

This is how LTX-2's makers carry long memory (ComfyUI-LTXVideo's looping sampler passes
``optional_negative_index_latents``; ltx-core's keyframe conditioning adds the frame index to the positions and
applies the causal shift only at index 0). A stock ``LTX2VideoCondition`` cannot say it: a negative ``index``
wraps to the *last* latent frames.

``downscale`` d encodes a memory at (H/d, W/d), d² fewer tokens, and multiplies its spatial coordinates by d so
the tokens still span the canvas (as ``LTX2InContextPipeline`` does for ``reference_downscale_factor``); without
that the stock coordinates would put a half-size frame in the top-left quarter. The largest d' <= d that keeps
(H/d', W/d') on the VAE's grid is used, so a two-stage run's half-size first stage still works.

diffusers is imported at module level: import this module inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from diffusers import LTX2ConditionPipeline
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition, retrieve_latents
from diffusers.utils.torch_utils import randn_tensor

from .base import fitting_downscale


@dataclass
class LTX2MemoryCondition:
    """A memory frame (or a few) given to the model before the clip; never decoded.

    frames: what ``LTX2VideoCondition.frames`` takes (uint8 HxWx3 / FxHxWx3 array, PIL image, tensor).
    before: latent frames before frame 0 where it starts (pixel time ``-8 * before``). Memories need distinct
        slots: tokens at identical positions are the same to RoPE. A memory of n latent frames needs
        ``before >= n`` so that it ends before the clip.
    strength: 1.0 keeps the tokens clean on every step (timestep 0); lower values noise them like a keyframe.
    downscale: encode at (height / d, width / d), coordinates scaled back by d.
    crf: H.264 re-compression of a single frame before encoding (None: the model's default).
    """

    frames: Any
    before: int = 1
    strength: float = 1.0
    downscale: int = 1
    crf: Optional[int] = None


class LTX2MemoryPipeline(LTX2ConditionPipeline):
    """``LTX2ConditionPipeline`` that also takes :class:`LTX2MemoryCondition` items in ``conditions``.

    Loads like its parent (``LTX2MemoryPipeline.from_pretrained(folder)``, any LTX-2 generation) and is called
    like it.
    """

    @classmethod
    def sharing(cls, pipe) -> "LTX2MemoryPipeline":
        """A memory pipeline over the components of ``pipe`` (the same module objects: nothing is copied)."""
        if isinstance(pipe, cls):
            return pipe
        import inspect

        params = set(inspect.signature(cls.__init__).parameters)
        return cls(**{k: v for k, v in pipe.components.items() if k in params})

    def prepare_latents(self, conditions=None, batch_size: int = 1, num_channels_latents: int = 128,
                        height: int = 512, width: int = 768, num_frames: int = 121, frame_rate: float = 24.0,
                        noise_scale: float = 1.0, dtype=None, device=None, generator=None, latents=None):
        if conditions is not None and not isinstance(conditions, (list, tuple)):
            conditions = [conditions]
        conditions = list(conditions or [])
        memories = [c for c in conditions if isinstance(c, LTX2MemoryCondition)]
        ordinary = [c for c in conditions if not isinstance(c, LTX2MemoryCondition)]
        latents, mask, clean, extra_coords = super().prepare_latents(
            ordinary or None, batch_size, num_channels_latents, height, width, num_frames, frame_rate,
            noise_scale, dtype, device, generator, latents)
        if not memories:
            return latents, mask, clean, extra_coords
        gen = generator[0] if isinstance(generator, list) else generator
        tokens, coords, masks = [], [], []
        for m in memories:
            tok, crd = self.encode_memory(m, height, width, num_frames, frame_rate, device, dtype, gen)
            tokens.append(tok.expand(batch_size, -1, -1))
            coords.append(crd.expand(batch_size, -1, -1, -1))
            masks.append(torch.full((batch_size, tok.shape[1], 1), float(m.strength), device=mask.device,
                                    dtype=mask.dtype))
        tok, m_mask = torch.cat(tokens, dim=1), torch.cat(masks, dim=1)
        # the stock initial noising; a clean memory (strength 1) draws no noise, so the clip's noise is unchanged
        scaled = (1.0 - m_mask) * noise_scale
        noisy = tok
        if bool((scaled > 0).any()):
            noise = randn_tensor(tok.shape, generator=gen, device=tok.device, dtype=tok.dtype)
            noisy = noise * scaled + tok * (1 - scaled)
        mem_coords = torch.cat(coords, dim=2)
        return (torch.cat([latents, noisy], dim=1), torch.cat([mask, m_mask], dim=1), torch.cat([clean, tok], dim=1),
                mem_coords if extra_coords is None else torch.cat([extra_coords, mem_coords], dim=2))

    def encode_memory(self, m: LTX2MemoryCondition, height: int, width: int, num_frames: int, frame_rate: float,
                      device, dtype, generator=None):
        """Packed clean tokens (1, N, C) and their coordinates (1, 3, N, 2) for one memory."""
        if int(m.before) < 1:
            raise ValueError("a memory sits at least one latent frame before the clip (before >= 1)")
        r = self.vae_spatial_compression_ratio
        d = fitting_downscale(height, width, m.downscale, r)
        # the stock preprocessing (cover-resize, centre crop, CRF for one frame, [-1, 1]) at the memory's size
        proxy = LTX2VideoCondition(frames=m.frames, index=0, strength=float(m.strength), crf=m.crf)
        pixels, _, _, n_pixel = self.preprocess_conditions([proxy], height // d, width // d, num_frames, device=device)
        lat = retrieve_latents(self.vae.encode(pixels[0]), generator=generator, sample_mode="argmax")
        lat = self._normalize_latents(lat, self.vae.latents_mean, self.vae.latents_std).to(device=device, dtype=dtype)
        _, _, f, h, w = lat.shape
        if f > int(m.before):
            raise ValueError(f"a memory of {f} latent frames needs before >= {f} to end before the clip")
        coords = self._prepare_keyframe_coords(
            keyframe_latent_num_frames=f, keyframe_latent_height=h, keyframe_latent_width=w,
            pixel_frame_idx=-int(m.before) * self.vae_temporal_compression_ratio, num_pixel_frames=n_pixel[0],
            fps=frame_rate, device=device)
        if d != 1:
            coords[:, 1:] = coords[:, 1:] * d
        packed = self._pack_latents(lat, self.transformer_spatial_patch_size, self.transformer_temporal_patch_size)
        return packed, coords
