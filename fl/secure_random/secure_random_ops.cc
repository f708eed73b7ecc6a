// Cryptographically secure sampling ops for TF Encrypted on current TensorFlow.
//
// tf-encrypted ships its `secure_random` ops prebuilt for one TensorFlow version
// only; these ops implement the same interface (seed, seeded and unseeded
// uniform sampling) and are built against the installed TensorFlow.
//
// Keystream: ChaCha20 (IETF variant, RFC 8439) from libsodium, keyed by the
// 256-bit seed, with an all-zero nonce and the block counter starting at 0.
// Seeds and unseeded keys come from the operating system's entropy source.
//
// Sampling in [minval, maxval) draws one little-endian word of the output
// width per candidate and rejects the values below (2^bits - range) mod range,
// so the result is exactly uniform. minval == maxval means the full range of
// the dtype (no rejection), which additive secret sharing needs.

#include <sodium.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace fl_secure_random {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;
using ::tensorflow::errors::Internal;

constexpr int kSeedWords = crypto_stream_chacha20_ietf_KEYBYTES / sizeof(int32_t);

// Produces the ChaCha20 keystream of one key in order, a buffer at a time.
class KeyStream {
 public:
  explicit KeyStream(const unsigned char* key) {
    std::memcpy(key_, key, sizeof(key_));
    std::memset(nonce_, 0, sizeof(nonce_));
  }

  ~KeyStream() { sodium_memzero(key_, sizeof(key_)); }

  // The next `bytes` of the stream, written straight into `out`: whole blocks in one libsodium call.
  void Fill(unsigned char* out, size_t bytes) {
    const size_t buffered = std::min(bytes, buffer_.size() - position_);
    std::memcpy(out, buffer_.data() + position_, buffered);
    position_ += buffered;
    out += buffered;
    bytes -= buffered;
    const size_t whole = bytes / 64 * 64;
    if (whole > 0) {
      std::memset(out, 0, whole);
      crypto_stream_chacha20_ietf_xor_ic(out, out, whole, nonce_, counter_, key_);
      counter_ += whole / 64;
      out += whole;
      bytes -= whole;
    }
    if (bytes > 0) {
      Refill();
      std::memcpy(out, buffer_.data(), bytes);
      position_ = bytes;
    }
  }

  template <typename U>
  U Next() {
    if (position_ + sizeof(U) > buffer_.size()) Refill();
    U value;
    std::memcpy(&value, buffer_.data() + position_, sizeof(U));
    position_ += sizeof(U);
    return value;  // little-endian hosts only (x86-64, aarch64)
  }

 private:
  static constexpr size_t kBlocksPerRefill = 256;

  void Refill() {
    const size_t kept = buffer_.size() - position_;
    std::vector<unsigned char> next(kept + kBlocksPerRefill * 64, 0);
    std::memcpy(next.data(), buffer_.data() + position_, kept);
    crypto_stream_chacha20_ietf_xor_ic(next.data() + kept, next.data() + kept,
                                       kBlocksPerRefill * 64, nonce_, counter_,
                                       key_);
    counter_ += kBlocksPerRefill;
    buffer_.swap(next);
    position_ = 0;
  }

  unsigned char key_[crypto_stream_chacha20_ietf_KEYBYTES];
  unsigned char nonce_[crypto_stream_chacha20_ietf_NONCEBYTES];
  uint32_t counter_ = 0;
  std::vector<unsigned char> buffer_;
  size_t position_ = 0;
};

template <typename T>
void FillUniform(KeyStream* stream, T minval, T maxval, T* out, int64_t n) {
  using U = typename std::make_unsigned<T>::type;
  const U range = static_cast<U>(static_cast<U>(maxval) - static_cast<U>(minval));
  if (range == 0) {  // full range of the dtype: the keystream itself, little-endian as Next() reads it
    stream->Fill(reinterpret_cast<unsigned char*>(out), static_cast<size_t>(n) * sizeof(T));
    return;
  }
  // (2^bits - range) mod range, computed without a wider type.
  const U threshold = static_cast<U>(static_cast<U>(0 - range) % range);
  for (int64_t i = 0; i < n; ++i) {
    U candidate;
    do {
      candidate = stream->Next<U>();
    } while (candidate < threshold);
    out[i] = static_cast<T>(static_cast<U>(static_cast<U>(minval) + candidate % range));
  }
}

::tensorflow::Status ReadShape(OpKernelContext* ctx, TensorShape* shape) {
  const Tensor& shape_tensor = ctx->input(0);
  if (shape_tensor.dtype() == ::tensorflow::DT_INT32) {
    return ::tensorflow::TensorShapeUtils::MakeShape(shape_tensor.vec<int32_t>(), shape);
  }
  return ::tensorflow::TensorShapeUtils::MakeShape(shape_tensor.vec<int64_t>(), shape);
}

template <typename T>
::tensorflow::Status ReadBounds(OpKernelContext* ctx, int first, T* minval, T* maxval) {
  const Tensor& lo = ctx->input(first);
  const Tensor& hi = ctx->input(first + 1);
  if (!::tensorflow::TensorShapeUtils::IsScalar(lo.shape()) ||
      !::tensorflow::TensorShapeUtils::IsScalar(hi.shape())) {
    return InvalidArgument("minval and maxval must be scalars");
  }
  *minval = lo.scalar<T>()();
  *maxval = hi.scalar<T>()();
  if (*minval > *maxval) {
    return InvalidArgument("minval must be <= maxval, got ", *minval, " > ", *maxval);
  }
  return ::tensorflow::OkStatus();
}

::tensorflow::Status EnsureSodium() {
  if (sodium_init() < 0) return Internal("libsodium failed to initialise");
  return ::tensorflow::OkStatus();
}

class SecureSeedOp : public OpKernel {
 public:
  explicit SecureSeedOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    OP_REQUIRES_OK(ctx, EnsureSodium());
    Tensor* seed = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({kSeedWords}), &seed));
    randombytes_buf(seed->flat<int32_t>().data(), crypto_stream_chacha20_ietf_KEYBYTES);
  }
};

template <typename T>
class SeededRandomUniformOp : public OpKernel {
 public:
  explicit SeededRandomUniformOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    OP_REQUIRES_OK(ctx, EnsureSodium());
    TensorShape shape;
    OP_REQUIRES_OK(ctx, ReadShape(ctx, &shape));
    const Tensor& seed = ctx->input(1);
    OP_REQUIRES(ctx, seed.NumElements() == kSeedWords,
                InvalidArgument("seed must hold ", kSeedWords, " int32 words, got ",
                                seed.NumElements()));
    T minval, maxval;
    OP_REQUIRES_OK(ctx, ReadBounds<T>(ctx, 2, &minval, &maxval));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, shape, &output));
    KeyStream stream(reinterpret_cast<const unsigned char*>(seed.flat<int32_t>().data()));
    FillUniform<T>(&stream, minval, maxval, output->flat<T>().data(), output->NumElements());
  }
};

template <typename T>
class RandomUniformOp : public OpKernel {
 public:
  explicit RandomUniformOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    OP_REQUIRES_OK(ctx, EnsureSodium());
    TensorShape shape;
    OP_REQUIRES_OK(ctx, ReadShape(ctx, &shape));
    T minval, maxval;
    OP_REQUIRES_OK(ctx, ReadBounds<T>(ctx, 1, &minval, &maxval));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, shape, &output));
    unsigned char key[crypto_stream_chacha20_ietf_KEYBYTES];
    randombytes_buf(key, sizeof(key));
    KeyStream stream(key);
    sodium_memzero(key, sizeof(key));
    FillUniform<T>(&stream, minval, maxval, output->flat<T>().data(), output->NumElements());
  }
};

}  // namespace fl_secure_random

using ::tensorflow::shape_inference::InferenceContext;

REGISTER_OP("FlSecureSeed")
    .Output("seed: int32")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->Vector(fl_secure_random::kSeedWords));
      return ::tensorflow::OkStatus();
    });

REGISTER_OP("FlSecureSeededRandomUniform")
    .Input("shape: T")
    .Input("seed: int32")
    .Input("minval: dtype")
    .Input("maxval: dtype")
    .Output("output: dtype")
    .Attr("dtype: {int8, int16, int32, int64}")
    .Attr("T: {int32, int64}")
    .SetShapeFn(::tensorflow::shape_inference::RandomShape);

REGISTER_OP("FlSecureRandomUniform")
    .Input("shape: T")
    .Input("minval: dtype")
    .Input("maxval: dtype")
    .Output("output: dtype")
    .Attr("dtype: {int8, int16, int32, int64}")
    .Attr("T: {int32, int64}")
    .SetIsStateful()
    .SetShapeFn(::tensorflow::shape_inference::RandomShape);

REGISTER_KERNEL_BUILDER(Name("FlSecureSeed").Device(::tensorflow::DEVICE_CPU),
                        fl_secure_random::SecureSeedOp);

#define FL_REGISTER_UNIFORM(TYPE)                                               \
  REGISTER_KERNEL_BUILDER(Name("FlSecureSeededRandomUniform")                   \
                              .Device(::tensorflow::DEVICE_CPU)                               \
                              .HostMemory("shape")                              \
                              .TypeConstraint<TYPE>("dtype"),                   \
                          fl_secure_random::SeededRandomUniformOp<TYPE>);       \
  REGISTER_KERNEL_BUILDER(Name("FlSecureRandomUniform")                         \
                              .Device(::tensorflow::DEVICE_CPU)                               \
                              .HostMemory("shape")                              \
                              .TypeConstraint<TYPE>("dtype"),                   \
                          fl_secure_random::RandomUniformOp<TYPE>)

FL_REGISTER_UNIFORM(int8_t);
FL_REGISTER_UNIFORM(int16_t);
FL_REGISTER_UNIFORM(int32_t);
FL_REGISTER_UNIFORM(int64_t);
