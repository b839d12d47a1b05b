# pinedge edge node. BASE is a build argument so the image can be built on a
# locally made base where no registry is reachable:
#   podman build --build-arg BASE=localhost/python:3.11-slim -t pinedge .
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md NOTICE ./
COPY pkg pkg
COPY core core
COPY edge edge
COPY origin origin
COPY geodns geodns
COPY control control
RUN python -m venv /opt/pinedge \
 && /opt/pinedge/bin/pip install --no-cache-dir --quiet .

FROM ${BASE}
COPY --from=build /opt/pinedge /opt/pinedge
COPY NOTICE /usr/share/doc/pinedge/NOTICE
RUN useradd --system --uid 10001 --home-dir /var/lib/pinedge --create-home pinedge \
 && mkdir -p /etc/pinedge
ENV PATH=/opt/pinedge/bin:$PATH \
    PINEDGE_CONFIG=/etc/pinedge/edge.toml \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER pinedge
WORKDIR /var/lib/pinedge
EXPOSE 8080 8081
# The admin listener answers /healthz; inside the container it binds to all
# interfaces so the orchestrator's probes reach it, and stays unpublished.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2).status == 200 else 1)"
# Configuration: mount a TOML file at /etc/pinedge/edge.toml (PINEDGE_CONFIG;
# flags override it, PINEDGE_CONFIG= runs on flags alone) and pass secrets
# such as PINEDGE_ADMIN_TOKEN in the environment.
ENTRYPOINT ["pinedge"]
CMD ["edge", "--listen", "0.0.0.0:8080", "--admin", "0.0.0.0:8081"]
