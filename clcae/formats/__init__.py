"""Checkpoint file formats, below every network: what :mod:`clcae.checkpoints` builds its loaders on.

- :mod:`.files`: :class:`CheckpointError`, atomic saves, strict state-dict loading and finiteness checks, the
  format version of our files;
- :mod:`.read`: reading any checkpoint file without executing code from it (:func:`~.read.load_file`) and telling
  its layout (:func:`~.read.detect_format`);
- :mod:`.nvidia`: the restricted unpickler for NVIDIA stylegan2-ada-pytorch ``.pkl`` files and their conversion
  to the rosinality layout;
- :mod:`.rosinality`: a rosinality generator's configuration inferred from its tensor shapes;

The official CLCAE / pSp / e4e training options (``opts``) are read into constructor arguments by
:mod:`clcae.official_options`, above the networks it needs. Networks, losses and data import :mod:`.files` and
:mod:`.read` only; the public loaders (``load_generator``,
``load_inverter``, ``save_*``, ...) stay in :mod:`clcae.checkpoints`, which re-exports these names.
"""
