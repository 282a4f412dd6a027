COPY Appearance FROM $data
