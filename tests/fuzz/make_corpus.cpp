// Writes the seed corpus of the fuzz targets: small valid files of each format, in the input
// layout each target expects (see the comment at the top of each fuzz_*.cpp).
//   make_corpus OUTDIR  ->  OUTDIR/safetensors/*, OUTDIR/idx/*, OUTDIR/cifar10/*
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/safetensors.h"

namespace fs = std::filesystem;

namespace {

std::string gzip(const std::string& plain) {
  z_stream z{};
  if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw 1;
  std::string out(deflateBound(&z, plain.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(plain.data()));
  z.avail_in = static_cast<uInt>(plain.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) throw 2;
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

void write(const fs::path& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path.string());
}

std::string f32_bytes(size_t n, float start) {
  std::string b(n * 4, '\0');
  for (size_t i = 0; i < n; ++i) {
    const float v = start + 0.25f * static_cast<float>(i);
    std::memcpy(b.data() + 4 * i, &v, 4);
  }
  return b;
}

std::string idx(const std::vector<uint32_t>& dims, uint8_t fill) {
  std::string b = {0, 0, 0x08, static_cast<char>(dims.size())};
  size_t n = 1;
  for (uint32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) b += static_cast<char>((d >> s) & 0xFF);
    n *= d;
  }
  for (size_t i = 0; i < n; ++i) b += static_cast<char>((fill + i) % 10);
  return b;
}

// Mode byte 1 of fuzz_idx: images length (2 bytes, little-endian), images, labels.
std::string fashion_pair(const std::string& images, const std::string& labels) {
  std::string b = {1, static_cast<char>(images.size() & 0xFF),
                   static_cast<char>((images.size() >> 8) & 0xFF)};
  return b + images + labels;
}

std::string cifar_records(int n) {
  std::string b;
  for (int r = 0; r < n; ++r) {
    b += static_cast<char>(r % 10);
    for (int i = 0; i < 3072; ++i) b += static_cast<char>((r * 31 + i * 7) & 0xFF);
  }
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1];
  for (const char* d : {"safetensors", "idx", "cifar10"}) fs::create_directories(out / d);

  using tdrop::RawTensor;
  using tdrop::SafetensorsFile;
  // safetensors: empty, every dtype with metadata, a scalar and an empty tensor, and a small
  // tdrop-style checkpoint (model name and JSON config in the metadata).
  write(out / "safetensors" / "empty", tdrop::encode_safetensors({}));
  {
    SafetensorsFile f;
    f.tensors["a.f64"] = {"F64", {2}, std::string(16, '\x3f')};
    f.tensors["b.f32"] = {"F32", {2, 3}, f32_bytes(6, -1.0f)};
    f.tensors["c.f16"] = {"F16", {3}, std::string(6, '\x3c')};
    f.tensors["d.bf16"] = {"BF16", {1, 2}, std::string(4, '\x40')};
    f.tensors["e.i64"] = {"I64", {1}, std::string(8, '\x07')};
    f.tensors["f.i32"] = {"I32", {2}, std::string(8, '\x01')};
    f.tensors["g.u8"] = {"U8", {5}, "hello"};
    f.metadata["format"] = "pt";
    f.metadata["note"] = "seed";
    write(out / "safetensors" / "dtypes", tdrop::encode_safetensors(f));
  }
  {
    SafetensorsFile f;
    f.tensors["scalar"] = {"F32", {}, f32_bytes(1, 2.0f)};
    f.tensors["zero"] = {"F32", {0, 4}, ""};
    write(out / "safetensors" / "scalar_and_empty", tdrop::encode_safetensors(f));
  }
  {
    SafetensorsFile f;
    f.tensors["1.weight"] = {"F32", {3, 4}, f32_bytes(12, 0.5f)};
    f.tensors["1.bias"] = {"F32", {3}, f32_bytes(3, 0.0f)};
    f.tensors["3.weight"] = {"F32", {2, 3}, f32_bytes(6, -0.5f)};
    f.tensors["3.bias"] = {"F32", {2}, f32_bytes(2, 0.1f)};
    f.metadata["format"] = "tdrop";
    f.metadata["model"] = "mlp";
    f.metadata["config"] = R"({"hidden":[3],"input_features":4,"num_classes":2})";
    write(out / "safetensors" / "checkpoint", tdrop::encode_safetensors(f));
  }

  // IDX (mode byte 0, then the file), plain and gzip; Fashion-MNIST pairs (mode byte 1).
  const std::string labels = idx({5}, 3), images = idx({5, 3, 4}, 0), cube = idx({2, 2, 2, 2}, 1);
  write(out / "idx" / "labels", std::string(1, '\0') + labels);
  write(out / "idx" / "images", std::string(1, '\0') + images);
  write(out / "idx" / "rank4", std::string(1, '\0') + cube);
  write(out / "idx" / "labels_gz", std::string(1, '\0') + gzip(labels));
  write(out / "idx" / "images_gz", std::string(1, '\0') + gzip(images));
  write(out / "idx" / "pair_plain", fashion_pair(images, labels));
  write(out / "idx" / "pair_gz", fashion_pair(gzip(images), gzip(labels)));

  // CIFAR-10 (mode byte, then the batch file): one record, two records appended, five batches.
  write(out / "cifar10" / "one", std::string(1, '\0') + cifar_records(1));
  write(out / "cifar10" / "append", std::string(1, '\1') + cifar_records(2));
  write(out / "cifar10" / "train", std::string(1, '\2') + cifar_records(1));
  std::printf("seed corpus written to %s\n", out.c_str());
  return 0;
}
