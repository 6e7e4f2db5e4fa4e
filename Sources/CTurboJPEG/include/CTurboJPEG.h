#ifndef CTURBOJPEG_H
#define CTURBOJPEG_H
// libjpeg-turbo's TurboJPEG API (Debian: libturbojpeg0-dev), for encoding the emulated
// camera's MJPEG frames and decoding captured ones.
#include <turbojpeg.h>
#endif
