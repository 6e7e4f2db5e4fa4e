// CV4L2 is a header-only shim (CV4L2.h: constants and static inline wrappers); SwiftPM needs
// one C file to build a C target.
