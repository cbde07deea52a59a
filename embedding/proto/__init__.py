"""gRPC contract of the embedding server (embedding.proto) and its generated stubs."""

# A 150,000-id response of dim 256 fp32 is 150 MB: both ends allow large messages.
MAX_MESSAGE_BYTES = 1 << 30
GRPC_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
