"""AnnData in (X or a layer, dense or sparse) and out (varm, var, uns; h5ad round trip)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import batchglm as bg
from batchglm.anndata_io import read_anndata

from conftest import seed_example_1

SPEC = {"replicate": "condition"}
FORMULA = "~ 1 + condition + replicate"


def make_adata(n: int = 80, n_features: int = 6) -> ad.AnnData:
    dmat, cons = seed_example_1(n)
    sim = bg.simulate(
        dmat, dmat, n_features=n_features, constraints_loc=cons, constraints_scale=cons, seed=2
    )
    q = n // 4
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(
                np.repeat(["untreated", "treated"], 2 * q), categories=["untreated", "treated"]
            ),
            "replicate": np.repeat(["r1", "r2", "r3", "r4"], q),
        },
        index=[f"cell{i}" for i in range(n)],
    )
    adata = ad.AnnData(
        X=sim.data.copy(), obs=obs, var=pd.DataFrame(index=[f"gene{j}" for j in range(n_features)])
    )
    adata.layers["counts"] = sp.csr_matrix(sim.data)
    return adata


@pytest.fixture(scope="module")
def fitted():
    adata = make_adata()
    res = bg.fit(adata, FORMULA, "~ 1 + condition", layer="counts", constraints_loc=SPEC)
    return adata, res


@pytest.mark.parametrize("kind", ["X", "csr", "csc", "dense_layer"])
def test_every_input_gives_the_dense_fit(fitted, kind):
    adata, res = fitted
    y = adata.X
    if kind == "X":
        other = bg.fit(adata, FORMULA, "~ 1 + condition", constraints_loc=SPEC)
    else:
        a2 = adata.copy()
        a2.layers["raw"] = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "dense_layer": np.asarray}[
            kind
        ](y)
        other = bg.fit(a2, FORMULA, "~ 1 + condition", layer="raw", constraints_loc=SPEC)
    dense = bg.fit(np.asarray(y), FORMULA, "~ 1 + condition", obs=adata.obs, constraints_loc=SPEC)
    np.testing.assert_array_equal(other.loglik.to_numpy(), dense.loglik.to_numpy())
    np.testing.assert_array_equal(res.loglik.to_numpy(), dense.loglik.to_numpy())


def test_names_and_obs_come_from_the_anndata(fitted):
    adata, res = fitted
    assert list(res.feature_names) == list(adata.var_names)
    assert list(res.obs_names) == list(adata.obs_names)
    assert res.obs is adata.obs
    data = read_anndata(adata, "counts")
    assert data.kind == "sparse"  # kept sparse, cut into dense blocks only while fitting
    np.testing.assert_array_equal(data.block(slice(None)), adata.X)


def test_explicit_obs_overrides_adata_obs(fitted):
    adata, _ = fitted
    other = adata.obs.rename(columns={"condition": "group"})
    res = bg.fit(adata, "~ 1 + group", obs=other)
    assert list(res.coef_loc.columns) == ["Intercept", "group[T.treated]"]
    # A reordered table is matched to obs_names by name (docs/inputs.md).
    reordered = bg.fit(adata, "~ 1 + group", obs=other.iloc[::-1])
    pd.testing.assert_frame_equal(reordered.coef_loc, res.coef_loc)
    with pytest.raises(ValueError, match=r"`obs` must name the same observations as `data`"):
        bg.fit(adata, "~ 1 + group", obs=other.iloc[1:])


def test_input_errors(fitted):
    adata, _ = fitted
    with pytest.raises(
        ValueError,
        match=r"`layer` 'raw' is not a layer of the AnnData; its "
        r"layers are \['counts'\]",
    ):
        bg.fit(adata, "~ 1", layer="raw")
    empty = ad.AnnData(obs=adata.obs, var=adata.var)
    empty.layers["counts"] = adata.X
    with pytest.raises(ValueError, match=r"AnnData without \.X; pass `layer=`"):
        bg.fit(empty, "~ 1")
    text = ad.AnnData(X=np.zeros((2, 2)))
    text.layers["words"] = np.array([["a", "b"], ["c", "d"]], dtype=object)
    with pytest.raises(ValueError, match=r"layer 'words' must be numeric"):
        bg.fit(text, "~ 1", layer="words")
    with pytest.raises(
        ValueError,
        match=r"at least one observation and one feature, but "
        r"the AnnData has shape \(0, 3\)",
    ):
        bg.fit(ad.AnnData(X=np.zeros((0, 3))), "~ 1")


def test_to_anndata_writes_every_key(fitted, tmp_path):
    adata, res = fitted
    out = adata.copy()
    returned = res.to_anndata(out, key_added="bg")
    assert returned is out
    for part in ("coef_loc", "coef_scale", "se_loc", "se_scale"):
        frame = out.varm[f"bg_{part}"]
        assert isinstance(frame, pd.DataFrame)
        pd.testing.assert_frame_equal(frame, getattr(res, part))
    assert list(out.varm["bg_coef_loc"].columns) == [
        "Intercept",
        "condition[T.treated]",
        "replicate[r1]",
        "replicate[r2]",
        "replicate[r3]",
        "replicate[r4]",
    ]
    np.testing.assert_array_equal(out.var["bg_loglik"], res.loglik)
    np.testing.assert_array_equal(out.var["bg_converged"], res.converged)
    info = out.uns["bg"]
    assert info["family"] == "nb"
    assert info["loc"]["formula"] == FORMULA
    assert info["loc"]["constraint_spec"] == SPEC
    assert info["scale"]["formula"] == "~ 1 + condition"
    np.testing.assert_array_equal(info["loc"]["constraints"], res.constraints_loc)
    assert info["settings"]["tol"] == res.settings["tol"]

    path = tmp_path / "fit.h5ad"
    out.write_h5ad(path)
    back = ad.read_h5ad(path)
    for part in ("coef_loc", "coef_scale", "se_loc", "se_scale"):
        pd.testing.assert_frame_equal(
            back.varm[f"bg_{part}"],
            out.varm[f"bg_{part}"],
            check_dtype=False,
            check_index_type=False,  # pandas 3: `str` index written, read back as `string`
        )
    for col in ("loglik", "converged", "status", "n_iter"):
        np.testing.assert_array_equal(back.var[f"bg_{col}"], out.var[f"bg_{col}"])
    assert _nested_keys(back.uns["bg"]) == _nested_keys(info)
    assert back.uns["bg"]["loc"]["constraint_spec"] == SPEC
    np.testing.assert_array_equal(back.uns["bg"]["loc"]["coef_names"], info["loc"]["coef_names"])
    np.testing.assert_array_equal(back.uns["bg"]["scale"]["constraints"], np.eye(2))


def _nested_keys(d: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in d.items():
        keys.add(prefix + k)
        if isinstance(v, dict):
            keys |= _nested_keys(v, prefix + k + "/")
    return keys


def test_round_trip_of_equations_and_poisson(tmp_path):
    adata = make_adata(40, 3)
    cons = ["replicate[r1] + replicate[r2] = 0", "replicate[r3] + replicate[r4] = 0"]
    frame = bg.fit(adata, FORMULA, obs=adata.obs, constraints_loc=SPEC).design_loc
    res = bg.fit(adata, frame, family="poisson", constraints_loc=cons)
    res.to_anndata(adata)
    adata.write_h5ad(tmp_path / "p.h5ad")
    back = ad.read_h5ad(tmp_path / "p.h5ad")
    info = back.uns["batchglm"]
    assert info["family"] == "poisson"
    assert info["loc"]["formula"] == ""
    assert list(info["loc"]["constraint_spec"]) == cons
    assert back.varm["batchglm_coef_scale"].shape == (3, 0)
    assert len(info["scale"]["coef_names"]) == 0


def test_subset_fit_into_the_full_anndata(fitted):
    adata, _ = fitted
    sub = adata[:, ["gene4", "gene1"]]
    res = bg.fit(sub, "~ 1 + condition", layer="counts")
    out = adata.copy()
    res.to_anndata(out)
    coef = out.varm["batchglm_coef_loc"]
    assert coef.loc[["gene0", "gene2", "gene3", "gene5"]].isna().all().all()
    pd.testing.assert_frame_equal(coef.loc[["gene4", "gene1"]], res.coef_loc)
    assert list(out.var["batchglm_status"].astype(str)) == [
        "not_fitted",
        "converged",
        "not_fitted",
        "not_fitted",
        "converged",
        "not_fitted",
    ]
    assert not out.var["batchglm_converged"].iloc[0]
    assert out.var["batchglm_n_iter"].iloc[0] == -1


def test_output_errors(fitted):
    adata, res = fitted
    with pytest.raises(ValueError, match=r"6 fitted features are not in `adata.var_names`"):
        res.to_anndata(ad.AnnData(X=np.zeros((2, 2))))
    with pytest.raises(ValueError, match=r"`key_added` must be a non-empty string"):
        res.to_anndata(adata.copy(), key_added="a/b")
    with pytest.raises(ValueError, match=r"`adata` must be an AnnData, but a DataFrame"):
        res.to_anndata(pd.DataFrame())
    slashed = bg.fit(adata, pd.DataFrame({"a/b": np.ones(adata.n_obs)}))
    with pytest.raises(ValueError, match=r"coefficient name 'a/b' contains '/'"):
        slashed.to_anndata(adata.copy())
    dup = adata.copy()
    dup.var_names = ["g"] * 6
    with pytest.warns(UserWarning, match=r"6 features sharing 1 name\(s\), e.g. \['g'\]"):
        dup_res = bg.fit(dup, "~ 1")
    with pytest.raises(ValueError, match=r"feature names must be unique"):
        dup_res.to_anndata(dup)


def test_write_h5ad_stores_string_dtype_text(tmp_path):
    """Text held as pandas ``string`` arrays (pandas 3's default) is written and read back."""
    import anndata as ad

    from batchglm.anndata_write import write_h5ad

    obs = pd.DataFrame(
        {"donor": pd.array(["d1", "d2", "d1"], dtype="string")},
        index=pd.Index(["c1", "c2", "c3"], dtype="string"),
    )
    adata = ad.AnnData(X=np.ones((3, 2)), obs=obs)
    settings = getattr(ad, "settings", None)
    if settings is not None and hasattr(settings, "allow_write_nullable_strings"):
        # anndata's own default refuses these arrays: the writer is what makes this work.
        with settings.override(allow_write_nullable_strings=False):
            with pytest.raises(Exception, match="allow_write_nullable_strings"):
                adata.write_h5ad(tmp_path / "plain.h5ad")
            write_h5ad(adata, tmp_path / "x.h5ad")
    else:
        write_h5ad(adata, tmp_path / "x.h5ad")
    back = ad.read_h5ad(tmp_path / "x.h5ad")
    assert list(back.obs_names) == ["c1", "c2", "c3"]
    assert [str(v) for v in back.obs["donor"]] == ["d1", "d2", "d1"]
