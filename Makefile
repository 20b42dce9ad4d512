# Regenerate api/pcspb from the .proto with protoc (Debian: protobuf-compiler) and the Go plugins
# pinned in go.mod as tools.
.PHONY: proto build test
proto:
	protoc -I api/pcspb \
	  --plugin=protoc-gen-go=$$(go tool -n protoc-gen-go) \
	  --plugin=protoc-gen-go-grpc=$$(go tool -n protoc-gen-go-grpc) \
	  --go_out=api/pcspb --go_opt=paths=source_relative \
	  --go-grpc_out=api/pcspb --go-grpc_opt=paths=source_relative \
	  api/pcspb/pcs.proto api/pcspb/kv.proto

build:
	go build ./...

# Installs what the tests need (as root) and runs every test, as CI does.
test:
	.ci/run
