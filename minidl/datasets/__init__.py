"""Datasets: MURA, the musculoskeletal radiographs dataset, and a synthetic replica of its layout."""
from .mura import MURA, ImageRecord, MURASplit, UnreadableImageWarning, class_weights, load_mura, synthesize

__all__ = ["MURA", "MURASplit", "ImageRecord", "UnreadableImageWarning", "class_weights", "load_mura", "synthesize"]
