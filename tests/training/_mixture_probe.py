"""Probe for test_vae_prior.py, started by torchrun with 2 gloo processes: `_mixture_probe.py OUT_DIR IMAGE_FOLDER
[conditional]` (conditional: IMAGE_FOLDER has 2 class subfolders and the VAE and its mixture are per class).

Each rank builds a tiny VAE of its own (seeded by rank: other weights, so other posterior means than rank 0's),
fits the mixture prior as the schedule does (`VAETask.mixture` on a task holding only what it reads), and saves every
buffer of the mixture it ends with (OUT_DIR/rankR.safetensors) and the sizes of the image sets it encoded
(OUT_DIR/rankR.json).
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from genvision import prior_fit
from genvision.config import VAEConfig
from genvision.models.vae import ConvVAE
from genvision.training.common import make_accelerator
from genvision.training.vae import VAETask

if __name__ == "__main__":
    out_dir, folder = Path(sys.argv[1]), sys.argv[2]
    conditional = sys.argv[3:] == ["conditional"]
    accelerator = make_accelerator("no")
    rank = accelerator.process_index
    config = VAEConfig(dataset=f"folder:{folder}", latent_dim=3, base_channels=4, likelihood="bernoulli",
                       prior_components=4 if conditional else 2, prior_fit_images=16, conditional=conditional)
    encoded = []
    real_posterior_means = prior_fit.posterior_means

    def posterior_means(model, images, *args, **kwargs):
        encoded.append(len(images))
        return real_posterior_means(model, images, *args, **kwargs)

    prior_fit.posterior_means = posterior_means
    torch.manual_seed(rank)
    task = VAETask.__new__(VAETask)
    task.config, task.accelerator, task.step = config, accelerator, 0
    task.num_classes = 2 if conditional else 0
    task.model = ConvVAE(config.latent_dim, config.base_channels, 1, config.resolution, num_classes=task.num_classes)
    task._mixture, task._mixture_step, task._prior_fit_images, task._prior_fit_labels = None, -1, None, None
    mixture = task.mixture()
    save_file({name: buffer.contiguous() for name, buffer in mixture.named_buffers()},
              str(out_dir / f"rank{rank}.safetensors"))
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"encoded": encoded}))
    # End the group before exit: a gloo group torn down by interpreter shutdown can abort the process ("terminate
    # called without an active exception", SIGABRT) when the other rank is still in its last collective.
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()
