"""A gallery that has outgrown its codec is said so by `dedup run` (stderr and `--json`
warnings), with the command that fixes it; after `dedup gallery compact --retrain` it is not."""

from __future__ import annotations

import json

from tests.support.cli import Cli


def test_run_warns_when_the_gallery_has_outgrown_its_codec(deployment: Cli) -> None:
    from dedup.deployment import open_deployment
    from dedup.face.model import ModelSpec, model_id_for
    from dedup.pipeline import ensure_gallery, fill_synthetic, synthetic_sample

    dep = open_deployment(deployment.home)
    spec = ModelSpec.from_settings(dep.settings.face)
    model_id = model_id_for(spec)
    # A codec trained on 640 templates (16 lists), as a deployment that started small would have...
    gallery = ensure_gallery(dep, model_id, spec.output_dim, train_sample=synthetic_sample(spec.output_dim, 640, seed=3))
    assert gallery.codec is not None and gallery.codec.nlist == 16
    # ...holding 30,000 templates, for which a codec would now be trained with 256 lists.
    assert fill_synthetic(dep, 30_000, model_id, spec.output_dim) == 30_000

    out = deployment.run("run", "--once", "--json")
    report = json.loads(out.stdout)
    [warning] = [w for w in report["warnings"] if "outgrown its codec" in w]
    assert "16 IVF lists for 30,000 templates" in warning and "would have 256" in warning
    assert "dedup gallery compact --retrain" in warning and warning in out.stderr

    deployment.run("gallery", "compact", "--retrain")
    report = json.loads(deployment.run("run", "--once", "--json").stdout)
    assert not [w for w in report["warnings"] if "outgrown its codec" in w]
