import pytest
import torch

from drtk.interventions import add_direction, project_out, project_out_subspace, unit


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 7, 40, generator=g, dtype=torch.float64), torch.randn(40, generator=g, dtype=torch.float64)


def test_project_out_is_orthogonal_and_idempotent(data):
    acts, r = data
    once = project_out(acts, r)
    assert torch.allclose(once @ unit(r), torch.zeros(5, 7, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(project_out(once, r), once, atol=1e-12)
    # only the r component changed
    assert torch.allclose(acts - once, ((acts @ unit(r))[..., None]) * unit(r), atol=1e-12)


def test_project_out_is_out_of_place(data):
    acts, r = data
    before = acts.clone()
    project_out(acts, r)
    assert torch.equal(acts, before)


def test_project_out_ignores_direction_scale(data):
    acts, r = data
    assert torch.allclose(project_out(acts, r), project_out(acts, 17.0 * r), atol=1e-12)


def test_mask_selects_cells(data):
    acts, r = data
    mask = torch.zeros(5, 7, dtype=torch.float64)
    mask[1, 3] = 1.0
    out = project_out(acts, r, mask)
    changed = (out - acts).abs().sum(-1) > 0
    assert changed.sum() == 1 and changed[1, 3]


def test_subspace_projection_removes_every_basis_vector(data):
    acts, _ = data
    basis = torch.randn(3, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = project_out_subspace(acts, basis)
    assert (out @ basis.T).abs().max() < 1e-4  # QR runs in float32
    assert torch.allclose(project_out_subspace(acts, basis[:1]), project_out(acts, basis[0]), atol=1e-5)


def test_add_direction(data):
    acts, r = data
    assert torch.allclose(add_direction(acts, r, -2.0) - acts, -2.0 * r.expand_as(acts))


def test_zero_direction_is_an_error():
    with pytest.raises(ValueError, match="zero direction"):
        unit(torch.zeros(4))


def test_project_out_gradient_matches_finite_differences(data):
    acts, r = data
    acts = acts[:2, :3].clone().requires_grad_(True)
    r = r.clone().requires_grad_(True)
    mask = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 1.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, d: project_out(a, d, mask), (acts, r))
