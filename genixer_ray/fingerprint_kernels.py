"""The compiled perceptual hashes of :mod:`genixer_ray.fingerprints`, imported when the first image
is hashed (numba's compiled code is cached as :mod:`genixer_ray.hamming_kernels`' is).

One call per image for both hashes, its loops' bounds constants: a decode task hashes right after a
decode has pushed the interpreter's and numpy's code out of the CPU's caches, where the same steps
as a dozen numpy calls took 0.3 ms an image (BENCHMARKS.md, "Fingerprints")."""

import numba
import numpy as np

# The hashes' definition, here rather than in genixer_ray.fingerprints: numba's cache of the
# compiled code is renewed when this file changes, not when a module it reads constants from does.
SAMPLE_GRID = 192  # the image's pixels are read on a grid of this side
MARGIN = SAMPLE_GRID // 6  # phash_center leaves out this many samples along each side (1/6 of it)
THUMB = 32  # the DCT's input side
BITS = 8  # its lowest 8x8 frequencies make the 64 bits
BLOCK = SAMPLE_GRID // THUMB  # samples to a thumbnail cell's side: 6 for the whole image,
CENTER_BLOCK = (SAMPLE_GRID - 2 * MARGIN) // THUMB  # 4 for its centre
assert BLOCK * THUMB == SAMPLE_GRID and CENTER_BLOCK * THUMB == SAMPLE_GRID - 2 * MARGIN
# Luminance as Pillow's "L" conversion weighs it (ITU-R 601-2), kept as integers: only the order
# of the cells' sums matters (the hash equalizes their histogram).
_R, _G, _B = 299, 587, 114
_LEVELS = 512  # the equalized histogram's bins


def _dct_basis(n: int, k: int) -> np.ndarray:
    # The first k rows of the orthonormal DCT-II matrix of size n (what scipy.fft.dct(norm="ortho") applies).
    i = np.arange(n)
    basis = np.cos(np.pi * (2 * i[None, :] + 1) * np.arange(k)[:, None] / (2 * n)) * np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    return basis


_BASIS = _dct_basis(THUMB, BITS)


@numba.njit
def _cell_sums(pixels, ys, xs, top, block):
    # The (THUMB x THUMB) luminance sums of the grid's (block x block) samples from (top, top) on;
    # grid sample (y, x) is pixels[ys[y], xs[x]].
    out = np.empty((THUMB, THUMB), np.int64)
    for i in range(THUMB):
        for j in range(THUMB):
            s = np.int64(0)
            for y in range(top + i * block, top + (i + 1) * block):
                row = pixels[ys[y]]
                for x in range(top + j * block, top + (j + 1) * block):
                    p = row[xs[x]]
                    s += _R * np.int64(p[0]) + _G * np.int64(p[1]) + _B * np.int64(p[2])
            out[i, j] = s
    return out


@numba.njit
def _bits(cells, block):
    # pHash of the cell sums of (block x block) samples: each cell replaced by its rank (how many
    # cells are <= it: the histogram equalized), the lowest (BITS x BITS) frequencies of their
    # DCT, each bit "above the median", the first frequency the highest bit. Ranks are taken by a
    # sum's level of _LEVELS (a histogram and its running total): no sort, and the ties of a flat
    # region fall on the same cells on every machine.
    top = block * block * 255 * (_R + _G + _B)
    counts = np.zeros(_LEVELS, np.int64)
    levels = cells * np.int64(_LEVELS - 1) // top
    for i in range(THUMB):
        for j in range(THUMB):
            counts[levels[i, j]] += 1
    for v in range(1, _LEVELS):
        counts[v] += counts[v - 1]
    rows = np.zeros((BITS, THUMB))  # _BASIS @ ranks
    for a in range(BITS):
        for y in range(THUMB):
            for x in range(THUMB):
                rows[a, x] += _BASIS[a, y] * counts[levels[y, x]]
    low = np.empty(BITS * BITS)  # rows @ _BASIS.T
    for a in range(BITS):
        for b in range(BITS):
            s = 0.0
            for x in range(THUMB):
                s += rows[a, x] * _BASIS[b, x]
            low[a * BITS + b] = s
    median = np.median(low)
    h = np.uint64(0)
    for i in range(BITS * BITS):
        if low[i] > median:
            h |= np.uint64(1) << np.uint64(BITS * BITS - 1 - i)
    return h


@numba.njit(cache=True, nogil=True)
def hash_pair(pixels):
    """``(phash, phash_center)`` of an image's ``(h, w, channels)`` ``uint8`` pixels (R, G, B
    first), read on a grid of ``SAMPLE_GRID`` a side (each sample the pixel nearest its grid
    point's centre): the whole grid in cells of ``BLOCK`` samples a side, and the grid without
    ``MARGIN`` samples along each side in cells of ``CENTER_BLOCK``."""
    centres = 2 * np.arange(SAMPLE_GRID) + 1
    ys = centres * pixels.shape[0] // (2 * SAMPLE_GRID)
    xs = centres * pixels.shape[1] // (2 * SAMPLE_GRID)
    whole = _bits(_cell_sums(pixels, ys, xs, 0, BLOCK), BLOCK)
    return whole, _bits(_cell_sums(pixels, ys, xs, MARGIN, CENTER_BLOCK), CENTER_BLOCK)
