"""Input pipelines: `create(name, split, ...)` returns a DataSource for any dataset by name."""

from cnnjax.data.registry import create, list_datasets
from cnnjax.data.source import ArraySource, Batch
