// An HF config.json as coat-convert import reads it: the JSON, then ModelConfig::from_hf_json.
#include <nlohmann/json.hpp>

#include "coat/models/model_config.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json doc = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return 0;
  coat::fuzz::expect_only_library_errors([&] {
    const coat::models::ModelConfig c = coat::models::ModelConfig::from_hf_json(doc);
    (void)c.parameter_count();
    (void)c.to_hf_json();
  });
  return 0;
}
