COPY Scene FROM $data
