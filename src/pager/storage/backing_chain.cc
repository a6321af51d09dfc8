#include "pager/storage/backing_chain.h"

#include <cstring>
#include <utility>

#include <fmt/format.h>

namespace uffdpager {

Result<std::shared_ptr<const BackingChain>> BackingChain::Create(std::vector<std::shared_ptr<BackingFile>> layers) {
  if (layers.size() > kMaxLayers) {
    return Status::InvalidArgument(
        fmt::format("a chain of {} layers is deeper than the {} a session may have (layer "
                    "{}, {}, is one too many); merge it into a new base first",
                    layers.size(), kMaxLayers, kMaxLayers, layers[kMaxLayers]->path()));
  }
  for (size_t i = 1; i < layers.size(); ++i) {
    if (layers[i]->size() != layers[0]->size()) {
      return Status::InvalidArgument(
          fmt::format("layer {} ({}) is {} bytes, but the base ({}) is {}: every layer of a "
                      "chain is the whole memory",
                      i, layers[i]->path(), layers[i]->size(), layers[0]->path(), layers[0]->size()));
    }
  }
  std::shared_ptr<BackingChain> chain(new BackingChain(std::move(layers)));
  chain->MapLayers();
  return std::shared_ptr<const BackingChain>(std::move(chain));
}

std::shared_ptr<const BackingChain> BackingChain::Single(std::shared_ptr<BackingFile> file) {
  std::vector<std::shared_ptr<BackingFile>> layers;
  layers.push_back(std::move(file));
  std::shared_ptr<BackingChain> chain(new BackingChain(std::move(layers)));
  chain->MapLayers();
  return chain;
}

BackingChain::BackingChain(std::vector<std::shared_ptr<BackingFile>> layers) : layers_(std::move(layers)) {}

void BackingChain::MapLayers() {
  // From the top down, each layer adds the parts of its data that no layer
  // above it holds.
  std::vector<Segment> covered;
  for (size_t layer = layers_.size(); layer-- > 0;) {
    std::vector<Segment> fresh;
    size_t first = 0;  // the first covered segment that may meet the extent
    for (const auto& [start, end] : layers_[layer]->data_extents()) {
      while (first < covered.size() && covered[first].end <= start) ++first;
      uint64_t pos = start;
      for (size_t k = first; k < covered.size() && covered[k].start < end; ++k) {
        if (covered[k].start > pos) fresh.push_back({pos, covered[k].start, layer});
        pos = std::max(pos, covered[k].end);
      }
      if (pos < end) fresh.push_back({pos, end, layer});
    }
    std::vector<Segment> merged(covered.size() + fresh.size());
    std::merge(covered.begin(), covered.end(), fresh.begin(), fresh.end(), merged.begin(),
               [](const Segment& a, const Segment& b) { return a.start < b.start; });
    covered = std::move(merged);
  }
  segments_ = std::move(covered);
}

std::string BackingChain::IdentityText() const {
  if (layers_.size() == 1) return layers_[0]->IdentityText();
  std::string text = "layers";
  for (const auto& layer : layers_) text += "|" + layer->IdentityText();
  return text;
}

std::string BackingChain::Name() const {
  if (layers_.size() == 1) return layers_[0]->path();
  return fmt::format("the chain of {} layers topped by {}", layers_.size(), layers_.back()->path());
}

size_t BackingChain::PageLayer(uint64_t offset, uint64_t length) const {
  if (layers_.size() == 1) return 0;
  size_t layer = 0;
  bool any = false;
  bool mixed = false;
  uint64_t held = 0;
  ForEachDataPiece(offset, length, [&](uint64_t start, uint64_t end, size_t piece_layer) {
    if (any && piece_layer != layer) mixed = true;
    layer = piece_layer;
    any = true;
    held += end - start;
  });
  if (!any) return 0;  // zeros: a hole of every layer, the base's included
  if (mixed) return kMixedLayers;
  // Data of the base and holes read the same from the base alone; an upper
  // layer's data beside holes does not (the holes mean "look below").
  return layer == 0 || held == length ? layer : kMixedLayers;
}

Status BackingChain::EnsureRange(uint64_t offset, uint64_t length) const {
  Status status;
  ForEachDataPiece(offset, length, [&](uint64_t start, uint64_t end, size_t layer) {
    if (status.ok()) status = layers_[layer]->EnsureRange(start, end - start);
  });
  return status;
}

Status BackingChain::ReadRange(uint64_t offset, void* buffer, size_t length, uint64_t* bytes_read) const {
  auto* out = static_cast<uint8_t*>(buffer);
  uint64_t pos = offset;  // everything before it is filled
  Status status;
  ForEachDataPiece(offset, length, [&](uint64_t start, uint64_t end, size_t layer) {
    if (!status.ok()) return;
    std::memset(out + (pos - offset), 0, start - pos);  // no layer holds it: zeros, nothing to read
    status = layers_[layer]->ReadExact(start, out + (start - offset), end - start);
    if (status.ok()) *bytes_read += end - start;
    pos = end;
  });
  if (!status.ok()) return status;
  std::memset(out + (pos - offset), 0, offset + length - pos);
  return Status::Ok();
}

}  // namespace uffdpager
