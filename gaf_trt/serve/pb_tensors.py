"""Tensors between numpy and Triton's Python backend (``triton_python_backend_utils``).

The Python-backend stub that PyTriton 0.5-0.7 bundles (Triton 2.51) is compiled against the
numpy 1.x ABI. Under numpy >= 2, ``pb_utils.Tensor(name, array)`` reads the array's element
size at the numpy 1.x offset (its outputs arrive empty) and ``Tensor.as_numpy()`` builds
arrays with element size 0 (every element reads as the first one); so both directions go
through DLPack here. Used by the ``gaf`` solver model (:mod:`gaf_trt.serve.bls`) and, as
source text, by the stub-side proxy of ``gaf-trt serve`` (:mod:`gaf_trt.serve.pytriton_patch`
inserts this file into PyTriton's ``model.py``, which must not import gaf_trt): so this file
imports nothing of gaf_trt, has no ``from __future__`` line, and every top-level name starts
with ``gaf_``/``_gaf``/``_Gaf``.
"""

import ctypes as _gaf_ctypes

_GAF_USED_NAME = b"used_dltensor"  # kept alive: the capsule keeps a pointer to it
_gaf_ctypes.pythonapi.PyCapsule_SetName.argtypes = [_gaf_ctypes.py_object, _gaf_ctypes.c_char_p]


def _gaf_numpy_major():
    import numpy

    return int(numpy.__version__.split(".")[0])


def gaf_output_tensor(name, value):
    """A ``pb_utils.Tensor`` named ``name`` holding numpy array ``value`` (any shape). With
    numpy >= 2 the array goes through DLPack; the stub owns the DLPack tensor afterwards, and
    the capsule is marked consumed under the standard name so numpy does not free it."""
    import numpy
    import triton_python_backend_utils as pb_utils

    if _gaf_numpy_major() < 2 or value.dtype.hasobject:
        return pb_utils.Tensor(name, value)
    capsule = numpy.ascontiguousarray(value).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _gaf_ctypes.pythonapi.PyCapsule_SetName(capsule, _GAF_USED_NAME)
    return tensor


class _GafCapsule:
    """An object numpy's ``from_dlpack`` accepts, around a raw DLPack capsule (CPU)."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, *args, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)  # CPU


def gaf_input_array(tensor):
    """A numpy copy of a CPU ``pb_utils.Tensor`` (a request input or a BLS output). Under
    numpy >= 2 the data comes through DLPack (BYTES tensors, which have no DLPack form,
    through ``as_numpy``)."""
    import numpy

    if _gaf_numpy_major() < 2:
        return tensor.as_numpy()
    try:
        capsule = tensor.to_dlpack()
    except Exception:  # noqa: BLE001 - BYTES tensors have no DLPack form
        return tensor.as_numpy()
    return numpy.from_dlpack(_GafCapsule(capsule)).copy()
