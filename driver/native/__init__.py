"""Native-only half of the driver: wgpu-py backend, CLIs (generate / bench / quality), numpy
reference forward pass, synthetic random-weight models. Never shipped to the browser (the
browser wheel is ``driver`` minus this folder); nothing under ``driver/`` outside it imports it.
"""
