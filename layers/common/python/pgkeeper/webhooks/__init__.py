"""Signed function URL requests (Standard Webhooks): verification, secrets with rotation,
replay protection, the asynchronous continuation of long jobs, and the error → HTTP mapping.

`routes` puts these together for a handler; `sign` is the caller's half.
"""
