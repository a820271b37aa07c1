"""Sample-quality metrics: FID (Heusel et al. 2017), KID, precision/recall and the classifier score.

`stats` (feature statistics, Fréchet distance), `scores` (KID, Inception-style score, precision/recall, class
coverage), `statsfile` (``.npz`` statistics files), `extractors`, `dinov2`, `inception_weights` and `weights_fetch`
(the feature networks and where their weights come from),
`sources` (SOURCE strings to features), `evaluate` (`genvision stats` / `fid` as functions) and `sensitivity`.

Nothing is re-exported here on purpose: `statsfile` needs only numpy, the others need torch, and importing
`genvision.metrics` should stay cheap. Import the submodule you use.
"""
