# The relay and the sample receiver in one small image.
#   docker build -t smtm-relay .
#   docker run smtm-relay run --config /etc/relay/relay.yaml
#   docker run --entrypoint /receiver smtm-relay --secret /hook=SECRET
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/relay ./cmd/relay \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/receiver ./cmd/receiver

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/relay /relay
COPY --from=build /out/receiver /receiver
# /metrics, /healthz, /readyz when observability.listen is ":9464".
EXPOSE 9464
ENTRYPOINT ["/relay"]
CMD ["run", "--config", "/etc/relay/relay.yaml"]
