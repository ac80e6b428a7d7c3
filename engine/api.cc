#include "engine/api.h"

namespace moondream {

const char* TaskName(Task task) {
  switch (task) {
    case Task::kCaption:
      return "caption";
    case Task::kQuery:
      return "query";
    case Task::kDetect:
      return "detect";
    case Task::kPoint:
      return "point";
    case Task::kEncodeImage:
      return "encode_image";
  }
  return "unknown";
}

}  // namespace moondream
