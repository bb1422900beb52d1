"""hessian_spectrum in quick mode: outputs, exact identities, robust consequences."""

from __future__ import annotations

import json

import pytest

# The quick run (tests taking `result`) is marked slow to keep the default suite
# under its time limit; the library code it exercises is tested directly in
# tests/test_curvature.py (Hessian and Lanczos eigenvalues).
EXPERIMENT = "hessian_spectrum"


@pytest.mark.slow
def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["spectrum.png"]
    assert result.figures[0].stat().st_size > 5000
    assert len(result.claims) == 8
    assert {"top_eigenvalues_init", "top_eigenvalues_trained"} <= set(doc["tables"])
    assert len(doc["tables"]["top_eigenvalues_trained"]["hessian"]) == 110   # C² + C


@pytest.mark.slow
def test_identities_and_robust_facts(result):
    by = {c.name: c for c in result.claims}
    assert by["Lanczos top-12 eigenvalues vs exact eigvalsh (max relative error)"].measured \
        < 1e-10
    assert by["last-layer block of H vs I_C ⊗ Σ̃/C (max relative entry error)"].measured < 1e-10
    # P ≫ nC is the regime the bulk claim is stated in
    assert result.config["n_params"] >= 10 * result.config["n_outputs_total"]
    # at an interpolating point the residual term is tiny: G's top eigenvalues are H's
    assert result.config["train_loss"] < 1e-3
    assert by["top-C eigenvalues of G vs of H at the trained point (max relative "
              "difference)"].measured < 1e-2
    top = result.tables["top_eigenvalues_trained"]
    assert all(a >= b for a, b in zip(top["hessian"], top["hessian"][1:], strict=False))
    assert result.config["train_accuracy"] == 1.0
