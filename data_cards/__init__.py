"""Data-card template, shipped in the wheel as package data.

It lives at the top level of the repository so users find and edit it next to `luigi.cfg`; being a
package lets `pipeline.dataset.datacard` read it with `importlib.resources` whether the code runs
from a checkout, an editable install or a plain `pip install .`.
"""
