# Triton Inference Server on the CPU, for pods on the dev stack's real node: the
# tritonserver and python backend that PyPI's nvidia-pytriton wheel ships (devstack/triton.py
# runs the same build on the host). The chart and the RecModel defaults keep NVIDIA's image
# for real clusters. Built by devstack/images.py; the context is this directory alone.
ARG BASE=python:3.11.14-slim-bookworm

FROM $BASE AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The python backend's stub embeds libpython, which Debian's python3 binary does not use.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libpython3.11
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip download --quiet --no-deps --dest /tmp/wheel nvidia-pytriton==0.7.0 \
 && python3 -m zipfile -e /tmp/wheel/nvidia_pytriton-0.7.0-*.whl /tmp/unpacked \
 && mv /tmp/unpacked/pytriton/tritonserver /opt/tritonserver \
 && mv /tmp/unpacked/nvidia_pytriton.libs /opt/tritonserver/libs \
 && cp /opt/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub \
       /opt/tritonserver/backends/python/ \
 && rm -rf /opt/tritonserver/python_backend_stubs /tmp/wheel /tmp/unpacked \
 && chmod 755 /opt/tritonserver/bin/tritonserver \
       /opt/tritonserver/backends/python/triton_python_backend_stub \
 && mkdir -p /opt/tritonserver/caches && chmod 1777 /opt/tritonserver/caches \
 # Models import numpy; numpy 2 beside this stub answered every inference with an error.
 && /opt/venv/bin/pip install --quiet "numpy<2" \
 && /opt/venv/bin/pip uninstall --quiet -y pip setuptools

FROM $BASE
COPY --from=build /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 /usr/lib/x86_64-linux-gnu/
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/tritonserver /opt/tritonserver
# The venv first: the stub's embedded interpreter finds its site-packages (numpy) from the
# python on PATH. Backends are found at Triton's default, /opt/tritonserver/backends.
ENV PATH=/opt/tritonserver/bin:/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/opt/tritonserver/libs
# As the RecModel controller's Triton pods run (runAsUser 1000).
USER 1000:1000
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--help"]
