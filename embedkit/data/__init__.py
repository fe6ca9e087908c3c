"""Data readers that validate as they read (STS TSV, BEIR folders, text lines, labelled TSV)."""

from embedkit.data.readers import (
    BeirDataset,
    StsDataset,
    read_beir,
    read_labelled_tsv,
    read_sts_tsv,
    read_text_lines,
)

__all__ = ["BeirDataset", "StsDataset", "read_beir", "read_labelled_tsv", "read_sts_tsv", "read_text_lines"]
