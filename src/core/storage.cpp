// Storage lifetime: memory comes from (and returns to) the context's allocator, or is wrapped.
#include "coat/core/storage.h"

namespace coat {

Storage::Storage(ContextPtr context, size_t bytes, MemoryCategory category)
    : context_(std::move(context)), bytes_(bytes), category_(category) {
  data_ = context_->allocator().allocate(bytes, category);
}

Storage::Storage(ContextPtr context, void* data, size_t bytes, std::function<void(void*)> release)
    : context_(std::move(context)), data_(data), bytes_(bytes), release_(std::move(release)) {}

Storage::~Storage() {
  if (release_) {
    release_(data_);
  } else {
    context_->allocator().deallocate(data_, bytes_, category_);
  }
}

}  // namespace coat
