"""Real-HAT: HAT trained on Real-ESRGAN's synthetic real-world degradations, as an L1 model and a GAN.

We subclass basicsr 1.4.2's ``RealESRNetModel`` and ``RealESRGANModel`` (second-order degradations synthesized
per batch, a training-pair pool, USM-sharpened ground truth) and fix what they get wrong for us: their JPEG/USM
modules and pool live on the model's device instead of ``.cuda()``, and ``DiffJPEG``'s channels-last output is
made contiguous for basicsr's ``filter2D`` to ``.view``. Validation, testing and the training switches (AMP,
accumulation, clipping, EMA warm-up: hat.models.train_switches) are ``HATModel``'s.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from basicsr.losses.loss_util import get_refined_artifact_map
from basicsr.models.realesrgan_model import RealESRGANModel
from basicsr.models.realesrnet_model import RealESRNetModel
from basicsr.utils import DiffJPEG, USMSharp
from basicsr.utils.registry import MODEL_REGISTRY

import hat.losses  # noqa: F401  (registers LocalVGGPerceptualLoss for the GAN recipe)
from hat.models.hat_model import HATModel
from hat.models.train_step import add_weighted

#: Options that basicsr's degradation code reads (``opt[key]``) when it synthesizes training pairs.
DEGRADATION_KEYS = (
    'resize_prob', 'resize_range', 'gaussian_noise_prob', 'noise_range', 'poisson_scale_range', 'gray_noise_prob',
    'jpeg_range', 'second_blur_prob', 'resize_prob2', 'resize_range2', 'gaussian_noise_prob2', 'noise_range2',
    'poisson_scale_range2', 'gray_noise_prob2', 'jpeg_range2', 'gt_size',
)


class ContiguousDiffJPEG(DiffJPEG):
    """basicsr's JPEG simulator with a contiguous output, which basicsr's ``filter2D`` needs next."""

    def forward(self, x: torch.Tensor, quality: torch.Tensor | float) -> torch.Tensor:
        return super().forward(x, quality=quality).contiguous()


class RealDegradationOnDevice:
    """Mixin placed before basicsr's Real-ESRGAN model: degradation tools and pool on ``self.device``."""

    #: Option keys besides ``DEGRADATION_KEYS`` that the concrete model reads during synthesis.
    usm_keys: tuple[str, ...] = ()

    def __init__(self, opt: dict):
        """Check the degradation options, then build as HATModel and put the JPEG and USM tools on ``self.device``."""
        self.check_degradation_options(opt)
        HATModel.__init__(self, opt)  # skips only basicsr's Real-ESRGAN __init__, which calls .cuda()
        self.jpeger = ContiguousDiffJPEG(differentiable=False).to(self.device)
        self.usm_sharpener = USMSharp().to(self.device)
        self.queue_size = opt.get('queue_size', 180)

    @classmethod
    def check_degradation_options(cls, opt: dict) -> None:
        """Fail early, naming the missing keys, if training would synthesize pairs without its options."""
        if not (opt.get('is_train') and opt.get('high_order_degradation', True)):
            return
        missing = [key for key in DEGRADATION_KEYS + cls.usm_keys if key not in opt]
        if missing:
            raise ValueError(f'{cls.__name__} synthesizes its training pairs and needs the top-level options '
                             f'{", ".join(missing)}; copy them from options/train/train_Real_HAT_SRx4_mse_model.yml.')
        if opt['gt_size'] % opt['scale']:
            raise ValueError(f'gt_size {opt["gt_size"]} must be a multiple of scale {opt["scale"]}.')

    @torch.no_grad()
    def _dequeue_and_enqueue(self) -> None:
        """basicsr's training-pair pool, allocated on the batch's device instead of with ``.cuda()``."""
        if not hasattr(self, 'queue_lr'):
            batch = self.lq.size(0)
            if self.queue_size % batch:
                raise ValueError(f'queue_size {self.queue_size} must be a multiple of the batch size {batch} '
                                 '(batch_size_per_gpu, times num_gpu without distributed training).')
            self.queue_lr = self.lq.new_zeros((self.queue_size, *self.lq.shape[1:]))
            self.queue_gt = self.gt.new_zeros((self.queue_size, *self.gt.shape[1:]))
            self.queue_ptr = 0
        super()._dequeue_and_enqueue()

    @torch.no_grad()
    def feed_data(self, data: dict) -> None:
        synthesizing = self.is_train and self.opt.get('high_order_degradation', True)
        if not synthesizing and 'gt' not in data:
            # Validation without ground truth: drop the last training batch's GT so it is not shown or scored.
            for name in ('gt', 'gt_usm'):
                if hasattr(self, name):
                    delattr(self, name)
        super().feed_data(data)


@MODEL_REGISTRY.register()
class RealHATMSEModel(RealDegradationOnDevice, RealESRNetModel, HATModel):
    """Real-HAT stage 1: HAT with an L1 loss on Real-ESRGAN degradations (basicsr's ``RealESRNetModel``)."""

    usm_keys = ('gt_usm',)


@MODEL_REGISTRY.register()
class RealHATGANModel(RealDegradationOnDevice, RealESRGANModel, HATModel):
    """Real-HAT stage 2: L1 + perceptual + GAN fine-tuning with a discriminator (basicsr's ``RealESRGANModel``)."""

    usm_keys = ('l1_gt_usm', 'percep_gt_usm', 'gan_gt_usm')

    def init_training_settings(self) -> None:
        self.setup_train_switches()  # SRGANModel's init_training_settings does not reach HATModel's
        super().init_training_settings()

    def optimize_parameters(self, current_iter: int) -> None:
        """RealESRGANModel's generator and discriminator steps with the training switches: each micro-batch runs
        the generator (the discriminator frozen) then the discriminator; both optimizers step after the last."""
        targets = [self.gt if self.opt[key] is False else self.gt_usm for key in self.usm_keys]
        train_g = current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters
        self.optimizer_g.zero_grad(set_to_none=True)
        self.optimizer_d.zero_grad(set_to_none=True)
        parts = list(self.switches.micro_batches(self.lq, self.gt, *targets))
        losses: OrderedDict[str, torch.Tensor] = OrderedDict()
        outputs = []
        for index, (weight, (lq, gt, l1_gt, percep_gt, gan_gt)) in enumerate(parts):
            with self.gradient_sync(index == len(parts) - 1, self.net_g, self.net_d):
                output, part = self._generator_pass(lq, gt, l1_gt, percep_gt, weight, train_g)
                part.update(self._discriminator_pass(output, gan_gt, weight))
            add_weighted(losses, part, weight)
            outputs.append(output)
        self.output = torch.cat(outputs)
        if train_g:
            norm_g = self.step_optimizer(self.optimizer_g, self.net_g)
            if norm_g is not None:
                losses['grad_norm_g'] = norm_g
        norm_d = self.step_optimizer(self.optimizer_d, self.net_d)
        if norm_d is not None:
            losses['grad_norm_d'] = norm_d
        self.grad_scaler.update()
        self.update_ema(current_iter)
        self.log_dict = self.reduce_loss_dict(losses)

    def _generator_pass(self, lq, gt, l1_gt, percep_gt, weight: float, train_g: bool):
        """Generate a micro-batch and, on generator steps, back-propagate its losses; returns the detached output."""
        self.net_d.requires_grad_(False)
        losses = OrderedDict()
        with torch.set_grad_enabled(train_g):
            with self.autocast():
                output = self.net_g(lq)
            output = output.float()
            if not train_g:
                return output.detach(), losses
            if self.cri_pix:
                losses['l_g_pix'] = self.cri_pix(output, l1_gt)
            if self.cri_ldl:
                with torch.no_grad(), self.autocast():
                    output_ema = self.net_g_ema(lq)
                pixel_weight = get_refined_artifact_map(gt, output, output_ema.float(), 7)
                losses['l_g_ldl'] = self.cri_ldl(pixel_weight * output, pixel_weight * gt)
            if self.cri_perceptual:
                for name, value in zip(('l_g_percep', 'l_g_style'), self.cri_perceptual(output, percep_gt)):
                    if value is not None:
                        losses[name] = value
            with self.autocast():
                fake_pred = self.net_d(output)
            losses['l_g_gan'] = self.cri_gan(fake_pred.float(), True, is_disc=False)
            self.grad_scaler.scale(sum(losses.values()) * weight).backward()
        return output.detach(), losses

    def _discriminator_pass(self, output: torch.Tensor, gan_gt: torch.Tensor, weight: float):
        """Back-propagate the discriminator's losses on a real and a generated micro-batch."""
        self.net_d.requires_grad_(True)
        losses = OrderedDict()
        for name, images, real in (('real', gan_gt, True), ('fake', output, False)):
            with self.autocast():
                pred = self.net_d(images).float()
            loss = self.cri_gan(pred, real, is_disc=True)
            self.grad_scaler.scale(loss * weight).backward()
            losses[f'l_d_{name}'] = loss
            losses[f'out_d_{name}'] = pred.detach().mean()
        return losses
