"""Sample-quality metrics: FID statistics (`stats`), KID / Inception-style score / precision-recall / class coverage
(`scores`) and `.npz` statistics files (`statsfile`).

Nothing is re-exported here on purpose: `statsfile` needs only numpy, the others need torch, and importing
`genvision.metrics` should stay cheap. Import the submodule you use.
"""
