"""The Python API: `genvision.fid`, `stats`, `load_generator`, `sample`, `train_gan` and `train_vae`.

For notebooks, as `pytorch_fid.fid_score.calculate_fid_given_paths` and `torch_fidelity.calculate_metrics` are. Each
function is its CLI command with keywords for flags: the keywords are the fields of the command's config dataclass
(`batch_size=` for `--batch-size`), built and validated by `config.config_from_keywords`, and the work is the same
library call the command makes, so a result equals what the command prints or writes. Bad input raises the
command's one-line `UsageError`; an unknown keyword is named with the close valid ones. Torch is imported only
inside the functions, so `import genvision` (which re-exports them lazily) stays light.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Sequence

from genvision.config import GANConfig, SampleConfig, VAEConfig, config_from_keywords, require
from genvision.constants import PRIOR_FLAG_CHOICES
from genvision.errors import UsageError
from genvision.metrics.evaluate import FeatureConfig, FidConfig, StatsConfig

if TYPE_CHECKING:
    import torch

    from genvision.generators import GeneratorModule

StrPath = str | os.PathLike  # a path as a string or a pathlib.Path
SAMPLE_OPTIONS = ("batch_size", "ema", "truncation", "prior")  # the SampleConfig fields of prior samples in memory


def field_names(cls: type, *, without: tuple[str, ...] = ()) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in without]


def fid(source_a: StrPath, source_b: StrPath, **options: Any) -> dict[str, Any]:
    """`genvision fid SOURCE_A SOURCE_B --json`: the dict it prints.

    SOURCEs are image folders, .npz statistics files, generator checkpoints or run folders, or dataset specs
    (``mnist5k:train``). `options` are the fields of `FidConfig` but `json`: ``kid=True``, ``precision_recall=True``,
    ``num_samples=``, ``seed=``, ``prior=`` (auto, normal or gmm: the latents of generator SOURCEs), ``features=``,
    ``classifier=``, ``device=``, ... Keys: ``fid``, ``n_a``, ``n_b``, ``features``, ``extractor``,
    ``extractor_hash``, ``source_a``, ``source_b``, ``prior_a`` / ``prior_b`` (the resolved --prior of a generator
    SOURCE sampled: normal or gmm), plus each score computed (``kid`` and ``kid_std``; ``precision``, ``recall``,
    ``density`` and ``coverage`` with ``precision_recall=True``; ``classifier_score``, ``classes_covered``,
    ``protocol``, ...). With ``fd_infinity=True``: ``fd_infinity`` (FID extrapolated to N -> infinity),
    ``fd_infinity_slope`` and ``fd_infinity_points`` (the fit's [N, FID_N] pairs). With ``memorization=True``
    (SOURCE_B the training set; ``held_out=`` the real images calibrating it, default the test split of SOURCE_B's
    dataset; ``copy_percentile=``, default 1.0): ``copy_rate`` (share of SOURCE_A's images nearer to a training
    image than the threshold), ``copy_threshold`` (that percentile of the held-out images' nearest-training
    distances), ``copy_percentile``, ``memorization_held_out``, ``memorization_num_held_out``,
    ``memorization_distance_ratio`` (median nearest-training distance of SOURCE_A over that of the held-out images)
    and ``closest_pairs`` (``[{"generated": i, "training": j, "distance": d}, ...]``, closest first). When
    SOURCE_A is a class-conditional
    generator (its samples drawn with the training set's class frequencies, so ``fid`` compares with unconditional
    runs): ``class_accuracy`` (the share of samples the classifier assigns to the class they were drawn for; with
    classifier features, or ``classifier=`` given with Inception features) and, against a labelled SOURCE_B (a
    dataset spec, or a folder with one subfolder per class), ``fid_intra_class`` ({class name: FID of that class's
    samples against that class of SOURCE_B}) and ``fid_intra_class_mean``.
    """
    from genvision.metrics.evaluate import evaluate_fid

    names = field_names(FidConfig, without=("json",))  # the dict is returned, never printed
    config = config_from_keywords(FidConfig, options, what="genvision.fid()", names=names)
    return evaluate_fid(os.fspath(source_a), os.fspath(source_b), config).to_dict()


def stats(source: StrPath, output: StrPath | None = None, **options: Any) -> dict[str, Any]:
    """The FID statistics of SOURCE; with `output`, written there as by `genvision stats SOURCE --output FILE.npz`
    (an existing file is refused unless ``overwrite=True``).

    `options` are the fields of `FeatureConfig` (``features=``, ``classifier=``, ``num_samples=``, ``prior=``,
    ``device=``, ...) and, with `output`, ``overwrite``. Returns ``mu`` ((D,) float64 numpy array), ``sigma``
    ((D, D) float64), ``count`` (images), ``features`` (the extractor kind used), ``metadata`` (the file's metadata
    as a dict: extractor, extractor_hash, image_size, ...), ``path`` (str, only when written), ``prior`` (only for
    a generator SOURCE: the resolved --prior, normal or gmm) and ``protocol`` (the extractor, its resize rule, the
    image count and side).
    """
    from genvision.metrics.evaluate import compute_stats, write_stats

    source = os.fspath(source)
    if output is None:
        if "overwrite" in options:
            raise UsageError("genvision.stats(): overwrite= applies only with output=FILE.npz")
        result = compute_stats(source, config_from_keywords(FeatureConfig, options, what="genvision.stats()"))
    else:
        config = config_from_keywords(StatsConfig, options, what="genvision.stats()",
                                      names=field_names(StatsConfig, without=("output",)), fixed={"output": output})
        result = write_stats(source, config)
    values = {"mu": result.mu, "sigma": result.sigma, "count": result.count, "features": result.features,
              "metadata": dataclasses.asdict(result.metadata)}
    if result.path is not None:
        values["path"] = str(result.path)
    if result.prior is not None:
        values["prior"] = result.prior
    if result.protocol is not None:
        values["protocol"] = result.protocol
    return values


def load_generator(checkpoint_or_run: StrPath, *, ema: bool = True, device: str = "cpu",
                   prior: str = "auto") -> "GeneratorModule":
    """The generator of a GAN or VAE checkpoint (a run folder: its best checkpoint, else its latest) as one
    nn.Module in eval mode: z (N, latent_dim) -> images (N, C, H, W) in [-1, 1].

    A GAN's EMA weights are used when present and `ema` (as `genvision sample` does; ``ema=False``: the raw
    generator); a VAE gives the mean image of its decoder. Attributes: ``latent_dim``, ``resolution``, ``channels``,
    ``kind``, ``step``, ``checkpoint`` (its folder), ``used_ema``, ``prior_name`` (`prior` resolved: "auto" is a VAE
    run's saved --prior, else "normal") and ``prior``: under "gmm" the VAE's `GaussianMixturePrior` (a submodule,
    (eps, u) -> z; `genvision.sampling.prior_latents(generator.prior, N, generator.latent_dim, seed)` draws the
    latents `genvision.sample(..., prior="gmm")` decodes), else None (z ~ N(0, I)). `device`: auto, cpu, cuda, ...

    A class-conditional run (trained with --conditional) gives ``forward(z, labels)`` (labels int64 (N,) in
    [0, num_classes)), with ``num_classes``, ``class_names`` and ``class_counts`` (training images per class); its
    gmm prior maps (eps, u, labels) -> z (one mixture per class).
    """
    from genvision.generators import GeneratorModule
    from genvision.generators import load_generator as load
    from genvision.metrics.evaluate import resolve_device

    require(isinstance(ema, bool), "ema", "True or False", ema)
    require(prior in PRIOR_FLAG_CHOICES, "prior", "one of " + ", ".join(PRIOR_FLAG_CHOICES), prior)
    loaded = load(os.fspath(checkpoint_or_run), ema=ema, device=resolve_device(device), prior=prior)
    generator = GeneratorModule(loaded)
    generator.prior_name, generator.prior = loaded.prior_name, loaded.prior
    return generator


def sample(checkpoint_or_run: StrPath, num: int, seed: int = 0, *, device: str = "cpu",
           classes: Sequence[str | int] | str | int | None = None, **options: Any) -> "torch.Tensor":
    """uint8 images (num, C, H, W): exactly the PNGs `genvision sample CHECKPOINT --num NUM --seed SEED --out-dir
    DIR` writes (on the CPU, the default `device`; other devices may differ in the last bit), in sample order.

    `options`: ``batch_size`` (does not change the images), ``ema`` (default True), ``truncation`` (0 = off) and
    ``prior`` (``"auto"``: a VAE run's saved --prior, else normal; ``"normal"``; ``"gmm"``: a VAE's Gaussian
    mixture). Sample i depends only on (seed, i); under the normal prior its latent is
    `genvision.sampling.latent_noise`'s row i, under gmm `genvision.sampling.prior_latents`'s.

    `classes` (class-conditional runs only, as ``--class``): class indices (int) or names (str), or one of them;
    sample i is of class classes[i % len(classes)]. None: the training set's class frequencies, sample i of class
    `genvision.sampling.class_labels(num, generator.class_counts, seed)[i]`.
    """
    from genvision.metrics.evaluate import resolve_device
    from genvision.sampling import sample_images

    chosen = () if classes is None else tuple(classes) if isinstance(classes, (list, tuple)) else (classes,)
    config = config_from_keywords(SampleConfig, options, what="genvision.sample()", names=SAMPLE_OPTIONS,
                                  fixed={"source": checkpoint_or_run, "num": num, "seed": seed, "classes": chosen},
                                  check=SampleConfig.validate_images)
    return sample_images(config, resolve_device(device)).images


def train_gan(**options: Any) -> dict[str, Any]:
    """`python train_gan.py` with keywords for flags (the fields of `GANConfig`: ``out_dir=``, ``num_steps=``, ...);
    returns the run summary, what the run folder's summary.json holds (``run_dir``, ``step``, ``final_fid``,
    ``best_fid``, ``best_step``, ``fid_features``, ``wall_time_s``).

    The keywords given play the flags given: with ``resume=``, they override the run's saved config. The run prints
    its progress and closing line as the script does.
    """
    from genvision.training.gan import train_gan as train

    return train(config_from_keywords(GANConfig, options, what="genvision.train_gan()"), set(options))


def train_vae(**options: Any) -> dict[str, Any]:
    """`python train_vae.py` with keywords for flags (the fields of `VAEConfig`); returns the run summary, what the
    run folder's summary.json holds (that of `train_gan` plus the held-out negative ELBO and bits/dim)."""
    from genvision.training.vae import train_vae as train

    return train(config_from_keywords(VAEConfig, options, what="genvision.train_vae()"), set(options))
