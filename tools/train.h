// intgrads-images train and evaluate: the project's own CIFAR-10 model.
#pragma once

#include <string>
#include <vector>

namespace intgrads {

int RunTrain(const std::vector<std::string>& args);
int RunEvaluate(const std::vector<std::string>& args);

}  // namespace intgrads
