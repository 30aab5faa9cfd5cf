# Fails unless README.md contains examples/readme_usage.cpp verbatim in a ```cpp block.
file(READ ${README} readme)
file(READ ${EXAMPLE} example)
string(FIND "${readme}" "```cpp\n${example}```" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md's usage example differs from ${EXAMPLE}")
endif()
