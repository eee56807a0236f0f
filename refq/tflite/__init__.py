"""TFLite flatbuffers: read a .tflite model into a refq Graph (golden outputs under a profile),
and write a Graph as .tflite (to run the same model on TFLite Micro / LiteRT).

Needs the ``tflite`` extra (the schema module shipped in the tflite-micro wheel); no TensorFlow.
"""
