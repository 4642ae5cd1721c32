# The release image: the binaries GoReleaser built (static, CGO_ENABLED=0)
# for each platform, in the same distroless base as the Dockerfile that
# builds from source.
FROM gcr.io/distroless/static-debian12:nonroot
ARG TARGETPLATFORM
COPY $TARGETPLATFORM/relay /relay
COPY $TARGETPLATFORM/receiver /receiver
# /metrics, /healthz, /readyz when observability.listen is ":9464".
EXPOSE 9464
ENTRYPOINT ["/relay"]
CMD ["run", "--config", "/etc/relay/relay.yaml"]
