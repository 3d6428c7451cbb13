"""Avro in the Confluent wire format: framing, the vectorised encoder and decoder, the general decode path.

Pure functions over bytes and Arrow/numpy arrays; no I/O.
"""
