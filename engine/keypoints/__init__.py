"""Named keypoints on meshes: MediaPipe's body and hand models on multi-view renders.

``detect`` renders a mesh, runs the models and triangulates each named point
(``detect_keypoints``); ``hands`` adds the fingers from close-ups; ``pose_model``
is the model interface and its two back ends (the mediapipe package, or the
model runner: ``litert_models`` with MediaPipe's pre- and post-processing in
``blaze`` and the model files of ``mediapipe_files``); ``pose_server`` runs the
models in a child process; ``cli`` is ``python -m engine landmarks``.
"""
