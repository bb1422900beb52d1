"""Configurations of the `ntkit.models` presets compared with neural-tangents 0.6.5 (plain
data: tests/fixtures/make_nt_models.py loads this file by path, without torch or ntkit).

Each entry: the preset's keyword arguments (``decay``: length scale l of the positional
embedding covariance exp(−d/l), d the squared distance, or None) and the input shape
(C, *S), channels first.
"""

TRANSFORMERS = {
    "transformer_post_sum": dict(
        kw=dict(depth=2, n_heads=2, width=8, attention_mechanism="softmax",
                pos_emb_type="sum", layer_norm="post", b_std=0.1),
        decay=4.0, act="relu", input=(3, 6)),
    "transformer_pre_concat_erf": dict(
        kw=dict(depth=2, n_heads=1, width=8, attention_mechanism="abs",
                pos_emb_type="concat", w_pos_emb_std=0.7, layer_norm="pre", w_std=1.3,
                b_std=0.05),
        decay=None, act="erf", input=(2, 5)),
    "transformer_post_identity_2d": dict(
        kw=dict(depth=2, n_heads=2, width=8, attention_mechanism="identity",
                pos_emb_type="none", layer_norm="post", spatial_dims=2, w_std=1.0),
        decay=None, act="relu", input=(2, 3, 2)),
    "transformer_none_relu": dict(
        kw=dict(depth=2, n_heads=2, width=8, attention_mechanism="relu",
                pos_emb_type="sum", w_pos_emb_std=0.5, layer_norm="none", w_std=1.0),
        decay=2.0, act="relu", input=(2, 4)),
}

UNETS = {
    "unet_pool_1": dict(kw=dict(levels=1, width=4, readout="pool", b_std=0.1),
                        input=(2, 4, 4)),
    "unet_pixel_2": dict(kw=dict(levels=2, width=4, readout="pixel", convs=1),
                         input=(1, 4, 4)),
}
