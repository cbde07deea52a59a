# Triton Inference Server on the CPU, for pods on the dev stack's real node: the
# tritonserver and python backend that PyPI's nvidia-pytriton wheel ships (devstack/triton.py
# runs the same build on the host). The chart and the RecModel defaults keep NVIDIA's image
# for real clusters. Built by devstack/images.py; the context is this directory alone.
# DATA_PLANE is the embedding-server image (embedding/Dockerfile): its virtualenv brings
# RecOp's data plane, whose predict entry model (embedding/predict) the pods can serve.
ARG BASE=python:3.11.14-slim-bookworm
ARG DATA_PLANE=ghcr.io/recop/embedding-server:0.1.0

FROM $DATA_PLANE AS data-plane

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
 && mkdir -p /opt/tritonserver/caches && chmod 1777 /opt/tritonserver/caches

FROM $BASE
COPY --from=build /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 /usr/lib/x86_64-linux-gnu/
COPY --from=build /opt/tritonserver /opt/tritonserver
# The data plane's venv (numpy<2: numpy 2 beside this stub answered every inference with
# an error), and the entry model's repository where the RecModel's pods look for it
# (embedding/predict/contract.py ENTRY_REPOSITORY).
COPY --from=data-plane /opt/recop /opt/recop
RUN ln -s "$(/opt/recop/bin/python -c 'import embedding.predict, os; \
print(os.path.dirname(embedding.predict.__file__))')/repository" /opt/recop/models
# The venv first: the stub's embedded interpreter finds its site-packages (numpy, the
# data plane) from the python on PATH. Backends are at Triton's default location.
ENV PATH=/opt/tritonserver/bin:/opt/recop/bin:$PATH \
    LD_LIBRARY_PATH=/opt/tritonserver/libs
# As the RecModel controller's Triton pods run (runAsUser 1000).
USER 1000:1000
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--help"]
