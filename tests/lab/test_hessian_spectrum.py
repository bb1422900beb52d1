"""hessian_spectrum in quick mode: outputs, exact identities, robust consequences."""

from __future__ import annotations

import json

EXPERIMENT = "hessian_spectrum"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["spectrum.png"]
    assert result.figures[0].stat().st_size > 5000
    assert len(result.claims) == 14
    assert {"top_eigenvalues_init", "top_eigenvalues_trained"} <= set(doc["tables"])


def test_identities_and_robust_facts(result):
    by = {c.name: c for c in result.claims}
    for tag in ("init", "trained"):
        assert by[f"[{tag}] Lanczos top-12 eigenvalues vs exact eigvalsh (max relative "
                  "error)"].measured < 1e-10
    # at an interpolating point the residual term is tiny: G's top eigenvalues are H's
    assert by["[trained] top-C eigenvalues of G vs of H (max relative difference)"].measured \
        < 1e-3
    top = result.tables["top_eigenvalues_trained"]
    assert all(a >= b for a, b in zip(top["hessian"], top["hessian"][1:], strict=False))
    assert result.config["train_accuracy"] == 1.0
