// The TurboJPEG API is used as it is; this file only makes CTurboJPEG a C target.
#include "CTurboJPEG.h"
